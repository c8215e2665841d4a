import { sql } from 'kysely'
import type { PersonalDataTable } from '../../core/privacy.ts'
import { createFilesService, ownerLock } from './files.service.ts'
import { ownerPrefix } from './storage/file-storage.ts'

/**
 * Files belong to the person who uploaded them: the export lists them (name, type, size, metadata,
 * and where to download each), erasure deletes the rows and then every stored object of theirs
 * (originals and variants) once the erasure commits.
 */
export const filesPersonalData: readonly PersonalDataTable[] = [
  {
    table: 'files',
    description: 'Files you uploaded (download each with GET /api/v1/files/{id})',
    match: { column: 'owner', holds: 'user-id' },
    columns: [
      { name: 'owner', export: 'value' },
      { name: 'name', export: 'value' },
      { name: 'metadata', export: 'value' },
    ],
    context: ['id', 'type', 'size', 'sha256', 'visibility', 'purpose', 'width', 'height', 'created'],
    erase: {
      action: 'custom',
      describe:
        'deleted, and their stored bytes (originals and image variants) removed from the file storage',
      async run(trx, subject, ctx) {
        await sql`select ${ownerLock(subject.userId)}`.execute(trx)
        const gone = await trx.deleteFrom('files').where('owner', '=', subject.userId).executeTakeFirst()
        const rows = Number(gone.numDeletedRows)
        if (rows === 0) return { rows }
        return {
          rows,
          afterCommit: async () => {
            const service = createFilesService(ctx)
            service.forgetOwner(subject.userId)
            const store = await service.storage().catch(() => undefined)
            await store?.deletePrefix(ownerPrefix(subject.userId))
          },
        }
      },
    },
  },
  {
    table: 'file_uploads',
    description: 'Uploads of yours in progress (their bytes are being stored)',
    match: { column: 'owner', holds: 'user-id' },
    columns: [{ name: 'owner', export: 'value' }],
    context: ['sha256', 'size', 'token', 'started'],
    erase: { action: 'delete' },
  },
]
