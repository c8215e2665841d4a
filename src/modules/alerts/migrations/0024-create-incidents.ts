import { type Kysely, sql } from 'kysely'

/**
 * Built-in alerting: `incidents` (at most one not resolved per fingerprint, so that replicas
 * racing to open the same incident open it once), their timeline `incident_events`, the
 * processes' metric samples `alert_samples` and the evaluator's minute aggregates `alert_minutes`.
 */
export default {
  // biome-ignore lint/suspicious/noExplicitAny: migrations are independent of the current table types
  async up(db: Kysely<any>) {
    await db.schema
      .createTable('incidents')
      .addColumn('id', 'uuid', (c) => c.primaryKey())
      .addColumn('fingerprint', 'text', (c) => c.notNull())
      .addColumn('rule', 'text', (c) => c.notNull())
      .addColumn('kind', 'text', (c) => c.notNull().check(sql`kind in ('alert', 'anomaly', 'security')`))
      .addColumn('severity', 'text', (c) => c.notNull().check(sql`severity in ('page', 'ticket')`))
      .addColumn('status', 'text', (c) =>
        c.notNull().check(sql`status in ('open', 'acknowledged', 'resolved')`),
      )
      .addColumn('summary', 'text', (c) => c.notNull())
      .addColumn('description', 'text', (c) => c.notNull())
      .addColumn('labels', 'jsonb', (c) => c.notNull().defaultTo(sql`'{}'::jsonb`))
      .addColumn('value', 'double precision')
      .addColumn('opened_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
      .addColumn('last_seen_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
      .addColumn('acknowledged_at', 'timestamptz')
      .addColumn('escalated_at', 'timestamptz')
      .addColumn('resolved_at', 'timestamptz')
      .execute()
    await sql`create unique index incidents_active_fingerprint_idx on incidents (fingerprint)
      where status <> 'resolved'`.execute(db)
    await sql`create index incidents_opened_idx on incidents (opened_at desc, id desc)`.execute(db)

    await db.schema
      .createTable('incident_events')
      .addColumn('id', 'uuid', (c) => c.primaryKey())
      .addColumn('incident_id', 'uuid', (c) => c.notNull().references('incidents.id').onDelete('cascade'))
      .addColumn('kind', 'text', (c) =>
        c.notNull().check(sql`kind in ('opened', 'escalated', 'acknowledged', 'resolved')`),
      )
      .addColumn('actor_id', 'text')
      .addColumn('at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
      .execute()
    await db.schema
      .createIndex('incident_events_incident_idx')
      .on('incident_events')
      .columns(['incident_id', 'at'])
      .execute()

    await db.schema
      .createTable('alert_samples')
      .addColumn('seq', 'bigserial', (c) => c.primaryKey())
      .addColumn('instance_id', 'text', (c) => c.notNull())
      .addColumn('at', 'timestamptz', (c) => c.notNull())
      .addColumn('data', 'jsonb', (c) => c.notNull())
      .execute()
    await db.schema
      .createTable('alert_minutes')
      .addColumn('minute', 'timestamptz', (c) => c.primaryKey())
      .addColumn('data', 'jsonb', (c) => c.notNull())
      .execute()
  },
  // biome-ignore lint/suspicious/noExplicitAny: see above
  async down(db: Kysely<any>) {
    await db.schema.dropTable('alert_minutes').execute()
    await db.schema.dropTable('alert_samples').execute()
    await db.schema.dropTable('incident_events').execute()
    await db.schema.dropTable('incidents').execute()
  },
}
