import { type Kysely, sql } from 'kysely'

/**
 * Plinth's own job tables, beside the engine's schema (`plinth_jobs`, which pg-boss creates and
 * upgrades itself when the job engine starts):
 * - `job_schedules`: the source of truth for cron schedules (pg-boss holds a derived copy of the
 *   active ones, so pausing is removing that copy);
 * - `job_idempotency_keys`: one row per (job type, key) while its window lasts;
 * - `job_heartbeat`: when the built-in heartbeat job last completed, for `/health`.
 */
export default {
  // biome-ignore lint/suspicious/noExplicitAny: migrations are independent of the current table types
  async up(db: Kysely<any>) {
    await db.schema
      .createTable('job_schedules')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('job_name', 'text', (c) => c.notNull())
      .addColumn('cron', 'text', (c) => c.notNull())
      .addColumn('timezone', 'text', (c) => c.notNull().defaultTo('UTC'))
      .addColumn('payload', 'jsonb', (c) => c.notNull().defaultTo(sql`'{}'::jsonb`))
      .addColumn('missed', 'text', (c) =>
        c.notNull().defaultTo('skip').check(sql`missed in ('skip', 'once')`),
      )
      .addColumn('paused', 'boolean', (c) => c.notNull().defaultTo(false))
      .addColumn('description', 'text')
      .addColumn('builtin', 'boolean', (c) => c.notNull().defaultTo(false))
      .addColumn('created_by', 'text')
      .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
      .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
      .execute()
    await db.schema
      .createTable('job_idempotency_keys')
      .addColumn('job_name', 'text', (c) => c.notNull())
      .addColumn('key', 'text', (c) => c.notNull())
      .addColumn('job_id', 'uuid', (c) => c.notNull())
      .addColumn('expires_at', 'timestamptz', (c) => c.notNull())
      .addPrimaryKeyConstraint('job_idempotency_keys_pkey', ['job_name', 'key'])
      .execute()
    await db.schema
      .createIndex('job_idempotency_keys_expires_at_idx')
      .on('job_idempotency_keys')
      .column('expires_at')
      .execute()
    await db.schema
      .createTable('job_heartbeat')
      .addColumn('id', 'integer', (c) => c.primaryKey().check(sql`id = 1`))
      .addColumn('completed_at', 'timestamptz', (c) => c.notNull())
      .addColumn('job_id', 'uuid', (c) => c.notNull())
      .execute()
  },
  // biome-ignore lint/suspicious/noExplicitAny: see above
  async down(db: Kysely<any>) {
    await db.schema.dropTable('job_heartbeat').execute()
    await db.schema.dropTable('job_idempotency_keys').execute()
    await db.schema.dropTable('job_schedules').execute()
  },
}
