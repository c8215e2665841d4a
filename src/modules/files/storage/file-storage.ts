import type { Readable } from 'node:stream'

/** An inclusive byte range of an object (as HTTP `Range: bytes=start-end` names it). */
export interface ByteRange {
  readonly start: number
  readonly end: number
}

/** One stored object as a listing sees it. */
export interface StoredObject {
  readonly key: string
  readonly size: number
}

/**
 * Where file bytes live: the local disk (default) or an S3-compatible bucket. Keys are
 * `<owner>/<sha256[0..2]>/<sha256>` for originals and `<owner>/<sha256[0..2]>/<sha256>.v/<variant>`
 * for image variants and cached transforms (docs/decisions/0021-file-storage-layout.md). Writes
 * are all-or-nothing: a reader never sees half an object under its key.
 */
export interface FileStorage {
  readonly kind: 'disk' | 's3'
  /** Where it is, for people (`/var/lib/plinth/files`, `s3://bucket/files/`). */
  readonly location: string
  /** A local directory uploads are staged in (hashed and checked) before `put`. */
  readonly stagingDir: string
  /** Stores the staged file at `key` (moved on disk, uploaded to S3); the staged file is gone after. */
  put(key: string, stagedPath: string): Promise<void>
  /** Stores a small object made in memory (an image variant: a cache, stored without fsync on disk). */
  putBuffer(key: string, bytes: Uint8Array): Promise<void>
  /** The bytes (or a range of them), or undefined when there is no such object. */
  read(key: string, range?: ByteRange): Promise<Readable | undefined>
  /** The object's path on this machine, when the storage is a local disk (sharp reads it directly). */
  localPath?(key: string): string
  /** The object's size, or undefined when there is none. */
  stat(key: string): Promise<{ size: number } | undefined>
  /** Deletes the object and anything stored under `<key>.v/` (its variants); absent is not an error. */
  delete(key: string): Promise<void>
  /** Deletes every object under `prefix` (an owner's folder, on erasure); returns how many. */
  deletePrefix(prefix: string): Promise<number>
  /** Every object under `prefix` (all of them by default), variants included. */
  list(prefix?: string): AsyncIterable<StoredObject>
  close(): Promise<void>
}

const OWNER = /^[A-Za-z0-9_-]{1,100}$/
const SHA256 = /^[0-9a-f]{64}$/
const VARIANT = /^[a-z0-9][a-z0-9._-]{0,100}$/

/** The key of an original. */
export function objectKey(owner: string, sha256: string): string {
  if (!OWNER.test(owner)) throw new TypeError(`file storage: invalid owner ${JSON.stringify(owner)}`)
  if (!SHA256.test(sha256)) throw new TypeError('file storage: invalid sha256')
  return `${owner}/${sha256.slice(0, 2)}/${sha256}`
}

/** The key of a variant (`thumb.webp`, `w256-h256-cover.jpeg`) of an original. */
export function variantKey(owner: string, sha256: string, variant: string): string {
  if (!VARIANT.test(variant) || variant.includes('..'))
    throw new TypeError(`file storage: invalid variant ${JSON.stringify(variant)}`)
  return `${objectKey(owner, sha256)}.v/${variant}`
}

/** The folder of everything an owner stored. */
export function ownerPrefix(owner: string): string {
  if (!OWNER.test(owner)) throw new TypeError(`file storage: invalid owner ${JSON.stringify(owner)}`)
  return `${owner}/`
}

/** Parses an original's key back (undefined for variants and anything else). */
export function parseObjectKey(key: string): { owner: string; sha256: string } | undefined {
  const m = /^([A-Za-z0-9_-]{1,100})\/([0-9a-f]{2})\/([0-9a-f]{64})$/.exec(key)
  if (!m || !m[3]!.startsWith(m[2]!)) return undefined
  return { owner: m[1]!, sha256: m[3]! }
}

/** Checks a key is one this layout makes (no `..`, no absolute path). */
export function assertKey(key: string): string {
  if (
    !/^[A-Za-z0-9_-]{1,100}\/[0-9a-f]{2}\/[0-9a-f]{64}(\.v\/[a-z0-9][a-z0-9._-]{0,100})?$/.test(key) ||
    key.includes('..')
  )
    throw new TypeError(`file storage: invalid key ${JSON.stringify(key)}`)
  return key
}
