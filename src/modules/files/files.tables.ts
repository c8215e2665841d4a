import type { Generated } from 'kysely'

export type FileVisibility = 'private' | 'public'

/** One stored file: a row exists only once its bytes are safely in the storage (see files.service.ts). */
export interface FilesTable {
  id: string
  /** The user the file belongs to (also the folder of its object: `<owner>/<sha256>`). */
  owner: string
  /** Hex SHA-256 of the bytes: the object's key, and the de-duplication key per owner. */
  sha256: string
  size: string | number
  /** Media type decided from the bytes (magic numbers), never from the name or the client. */
  type: string
  /** The sanitised name the file was uploaded with (what downloads are named). */
  name: string
  visibility: FileVisibility
  /** What the file is for (`attachment`, `avatar`, `image`): which types it may have. */
  purpose: string
  metadata: Record<string, string>
  /** Image width and height in pixels (first frame), null for other types. */
  width: number | null
  height: number | null
  created: Generated<Date>
}

/**
 * An upload whose bytes are being written to the storage (outside any transaction): it holds its
 * object key until its row is recorded or it gives up (see files.service.ts).
 */
export interface FileUploadsTable {
  owner: string
  sha256: string
  size: string | number
  /** Which upload holds the key. */
  token: string
  started: Generated<Date>
}

declare module '../../infra/db/tables.ts' {
  interface PlinthTables {
    files: FilesTable
    file_uploads: FileUploadsTable
  }
}
