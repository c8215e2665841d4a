import { type Kysely, sql } from 'kysely'

/** Runtime settings that operators change without a redeploy (feature flags and others build on it). */
export default {
  // biome-ignore lint/suspicious/noExplicitAny: migrations are independent of the current table types
  async up(db: Kysely<any>) {
    await db.schema
      .createTable('plinth_settings')
      .addColumn('key', 'text', (c) => c.primaryKey().check(sql`key ~ '^[a-z][a-z0-9_.:-]{0,127}$'`))
      .addColumn('value', 'jsonb', (c) => c.notNull())
      .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
      .execute()
  },
  // biome-ignore lint/suspicious/noExplicitAny: see above
  async down(db: Kysely<any>) {
    await db.schema.dropTable('plinth_settings').execute()
  },
}
