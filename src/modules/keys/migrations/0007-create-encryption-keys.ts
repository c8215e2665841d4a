import { type Kysely, sql } from 'kysely'

/**
 * Data keys, wrapped by the master key. At most one is `active` (a partial unique index), and a
 * row is retired exactly when it has a `retired_at`.
 */
export default {
  // biome-ignore lint/suspicious/noExplicitAny: migrations are independent of the current table types
  async up(db: Kysely<any>) {
    await db.schema
      .createTable('encryption_keys')
      .addColumn('id', 'text', (c) => c.primaryKey().check(sql`id ~ '^[0-9a-f]{16}$'`))
      .addColumn('wrapped_key', 'text', (c) => c.notNull())
      .addColumn('state', 'text', (c) => c.notNull().check(sql`state in ('active', 'retiring', 'retired')`))
      .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
      .addColumn('retired_at', 'timestamptz')
      .addCheckConstraint('encryption_keys_retired_at', sql`(state = 'retired') = (retired_at is not null)`)
      .execute()
    await sql`create unique index encryption_keys_one_active on encryption_keys (state) where state = 'active'`.execute(
      db,
    )
  },
  // biome-ignore lint/suspicious/noExplicitAny: see above
  async down(db: Kysely<any>) {
    await db.schema.dropTable('encryption_keys').execute()
  },
}
