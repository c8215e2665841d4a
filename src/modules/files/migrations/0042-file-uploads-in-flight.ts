import { type Kysely, sql } from 'kysely'

/**
 * `file_uploads`: the uploads whose bytes are being written to the storage, outside any
 * transaction. One per object key (`owner`, `sha256`): its holder alone writes that key or creates
 * the row for it, so a delete or the sweep never removes bytes an upload is about to record, and
 * quota checks count bytes on their way in. Removed when the row is recorded or the upload gives
 * up; a holder that died leaves one the sweep removes after an hour (see files.service.ts).
 */
export default {
  // biome-ignore lint/suspicious/noExplicitAny: migrations are independent of the current table types
  async up(db: Kysely<any>) {
    await db.schema
      .createTable('file_uploads')
      .addColumn('owner', 'text', (c) => c.notNull())
      .addColumn('sha256', 'text', (c) => c.notNull().check(sql`sha256 ~ '^[0-9a-f]{64}$'`))
      .addColumn('size', 'bigint', (c) => c.notNull().check(sql`size >= 0`))
      .addColumn('token', 'uuid', (c) => c.notNull())
      .addColumn('started', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
      .addPrimaryKeyConstraint('file_uploads_pkey', ['owner', 'sha256'])
      .execute()
  },
  // biome-ignore lint/suspicious/noExplicitAny: see above
  async down(db: Kysely<any>) {
    await db.schema.dropTable('file_uploads').execute()
  },
}
