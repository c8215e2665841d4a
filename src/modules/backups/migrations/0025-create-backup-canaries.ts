import { type Kysely, sql } from 'kysely'

/**
 * Canary rows of the disaster-recovery drills (`plinth dr drill`): a drill writes one before the
 * backup it restores and one at the "disaster"; the newest one found in the restored copy measures
 * the RPO. Nothing personal, a handful of rows (each drill keeps the newest 100).
 */
export default {
  // biome-ignore lint/suspicious/noExplicitAny: migrations are independent of the current table types
  async up(db: Kysely<any>) {
    await db.schema
      .createTable('backup_canaries')
      .addColumn('id', 'bigserial', (c) => c.primaryKey())
      .addColumn('drill', 'text', (c) => c.notNull())
      .addColumn('written_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
      .execute()
  },
  // biome-ignore lint/suspicious/noExplicitAny: see above
  async down(db: Kysely<any>) {
    await db.schema.dropTable('backup_canaries').execute()
  },
}
