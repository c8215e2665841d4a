import { type Kysely, sql } from 'kysely'

/**
 * `import_seen_keys` becomes UNLOGGED (no WAL for its rows and index: the largest share of a
 * batch's cost), and each checkpoint counts the keys it stored (`seen_keys`). An unlogged table is
 * emptied by PostgreSQL's crash recovery (and left out of physical backups): a resume that finds
 * fewer keys than its checkpoint counts starts the file again instead of missing duplicates. See
 * docs/decisions/0020-import-and-legacy-passwords.md.
 */
export default {
  // biome-ignore lint/suspicious/noExplicitAny: migrations are independent of the current table types
  async up(db: Kysely<any>) {
    await sql`alter table import_seen_keys set unlogged`.execute(db)
    await db.schema
      .alterTable('import_checkpoints')
      .addColumn('seen_keys', 'bigint', (c) => c.notNull().defaultTo(0))
      .execute()
  },
  // biome-ignore lint/suspicious/noExplicitAny: see above
  async down(db: Kysely<any>) {
    await db.schema.alterTable('import_checkpoints').dropColumn('seen_keys').execute()
    await sql`alter table import_seen_keys set logged`.execute(db)
  },
}
