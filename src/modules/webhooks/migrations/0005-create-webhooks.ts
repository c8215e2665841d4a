import { type Kysely, sql } from 'kysely'

/**
 * Outbound webhooks: `webhook_subscriptions` (where to deliver which events, with an encrypted
 * signing secret) and `webhook_deliveries` (one row per attempt, dropped with its subscription).
 */
export default {
  // biome-ignore lint/suspicious/noExplicitAny: migrations are independent of the current table types
  async up(db: Kysely<any>) {
    await db.schema
      .createTable('webhook_subscriptions')
      .addColumn('id', 'uuid', (c) => c.primaryKey())
      .addColumn('url', 'text', (c) => c.notNull())
      .addColumn('event_types', sql`text[]`, (c) => c.notNull().check(sql`cardinality(event_types) > 0`))
      .addColumn('secret', 'text', (c) => c.notNull())
      .addColumn('description', 'text')
      .addColumn('active', 'boolean', (c) => c.notNull().defaultTo(true))
      .addColumn('created_by', 'text')
      .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
      .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
      .execute()
    // Matching an event is `event_types && <its candidate patterns>` over the active rows.
    await sql`create index webhook_subscriptions_event_types_idx on webhook_subscriptions
      using gin (event_types) where active`.execute(db)

    await db.schema
      .createTable('webhook_deliveries')
      .addColumn('id', 'uuid', (c) => c.primaryKey())
      .addColumn('subscription_id', 'uuid', (c) =>
        c.notNull().references('webhook_subscriptions.id').onDelete('cascade'),
      )
      .addColumn('event_id', 'uuid', (c) => c.notNull())
      .addColumn('event_type', 'text', (c) => c.notNull())
      .addColumn('job_id', 'uuid')
      .addColumn('attempt', 'integer', (c) => c.notNull())
      .addColumn('status', 'text', (c) => c.notNull().check(sql`status in ('succeeded', 'failed')`))
      .addColumn('response_status', 'integer')
      .addColumn('error', 'text')
      .addColumn('duration_ms', 'integer', (c) => c.notNull())
      .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
      .execute()
    await db.schema
      .createIndex('webhook_deliveries_subscription_created_idx')
      .on('webhook_deliveries')
      .columns(['subscription_id', 'created_at', 'id'])
      .execute()
  },
  // biome-ignore lint/suspicious/noExplicitAny: see above
  async down(db: Kysely<any>) {
    await db.schema.dropTable('webhook_deliveries').execute()
    await db.schema.dropTable('webhook_subscriptions').execute()
  },
}
