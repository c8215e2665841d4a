import { type Kysely, sql } from 'kysely'

/**
 * Error tracking: `error_groups` (unexpected errors grouped by fingerprint, with counts, first and
 * last seen, a sample request and trace) and `error_deploys` (when each version first started).
 */
export default {
  // biome-ignore lint/suspicious/noExplicitAny: migrations are independent of the current table types
  async up(db: Kysely<any>) {
    await db.schema
      .createTable('error_groups')
      .addColumn('id', 'uuid', (c) => c.primaryKey().defaultTo(sql`gen_random_uuid()`))
      .addColumn('fingerprint', 'text', (c) => c.notNull().unique())
      .addColumn('source', 'text', (c) => c.notNull().check(sql`source in ('http', 'job', 'process')`))
      .addColumn('location', 'text', (c) => c.notNull())
      .addColumn('error_name', 'text', (c) => c.notNull())
      .addColumn('message', 'text', (c) => c.notNull())
      .addColumn('frames', 'text', (c) => c.notNull())
      .addColumn('count', 'bigint', (c) => c.notNull())
      .addColumn('first_seen', 'timestamptz', (c) => c.notNull())
      .addColumn('last_seen', 'timestamptz', (c) => c.notNull())
      .addColumn('sample_request_id', 'text')
      .addColumn('sample_trace_id', 'text')
      .addColumn('first_version', 'text', (c) => c.notNull())
      .addColumn('last_version', 'text', (c) => c.notNull())
      .addColumn('status', 'text', (c) =>
        c.notNull().defaultTo('open').check(sql`status in ('open', 'resolved', 'muted')`),
      )
      .addColumn('status_changed_at', 'timestamptz')
      .execute()
    await db.schema
      .createIndex('error_groups_last_seen_idx')
      .on('error_groups')
      .columns(['last_seen', 'id'])
      .execute()
    await db.schema
      .createTable('error_deploys')
      .addColumn('version', 'text', (c) => c.primaryKey())
      .addColumn('started_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
      .execute()
  },
  // biome-ignore lint/suspicious/noExplicitAny: see above
  async down(db: Kysely<any>) {
    await db.schema.dropTable('error_deploys').execute()
    await db.schema.dropTable('error_groups').execute()
  },
}
