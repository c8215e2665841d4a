/**
 * The production line's tables: machines, the thresholds set on their metrics, the readings
 * their gateways send, hourly roll-ups of those readings, alerts raised when a reading crosses a
 * threshold, and the machines each person watches. Application migrations are numbered from 1000.
 */
import { type ColumnType, type Generated, type PlinthMigration, sql } from 'plinth'

type Timestamp = ColumnType<Date, Date | string | undefined, Date | string>

export interface Tables {
  production_machines: {
    id: string
    name: string
    line: string
    created_by: string | null
    created_at: Generated<Date>
  }
  production_thresholds: {
    machine_id: string
    metric: string
    min_value: number | null
    max_value: number | null
    updated_by: string | null
    updated_at: Timestamp
  }
  production_readings: {
    id: Generated<string>
    machine_id: string
    metric: string
    value: number
    recorded_at: Timestamp
    ingested_by: string | null
  }
  production_rollups: {
    machine_id: string
    metric: string
    hour: Timestamp
    readings: number
    min_value: number
    max_value: number
    avg_value: number
  }
  production_alerts: {
    id: Generated<string>
    machine_id: string
    metric: string
    value: number
    bound: 'min' | 'max'
    limit_value: number
    recorded_at: Timestamp
    acknowledged_by: string | null
    acknowledged_at: Date | null
  }
  production_watches: {
    user_id: string
    machine_id: string
    created_at: Generated<Date>
  }
}

export const migrations: Record<string, PlinthMigration> = {
  '1001-create-production-line': {
    async up(db) {
      await db.schema
        .createTable('production_machines')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('line', 'text', (c) => c.notNull())
        .addColumn('created_by', 'uuid')
        .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
        .execute()
      await db.schema
        .createTable('production_thresholds')
        .addColumn('machine_id', 'text', (c) =>
          c.notNull().references('production_machines.id').onDelete('cascade'),
        )
        .addColumn('metric', 'text', (c) => c.notNull())
        .addColumn('min_value', 'double precision')
        .addColumn('max_value', 'double precision')
        .addColumn('updated_by', 'uuid')
        .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
        .addPrimaryKeyConstraint('production_thresholds_pk', ['machine_id', 'metric'])
        .execute()
      await db.schema
        .createTable('production_readings')
        .addColumn('id', 'bigserial', (c) => c.primaryKey())
        .addColumn('machine_id', 'text', (c) =>
          c.notNull().references('production_machines.id').onDelete('cascade'),
        )
        .addColumn('metric', 'text', (c) => c.notNull())
        .addColumn('value', 'double precision', (c) => c.notNull())
        .addColumn('recorded_at', 'timestamptz', (c) => c.notNull())
        .addColumn('ingested_by', 'uuid')
        .execute()
      await db.schema
        .createIndex('production_readings_series_idx')
        .on('production_readings')
        .columns(['recorded_at', 'machine_id', 'metric'])
        .execute()
      await db.schema
        .createIndex('production_readings_ingested_by_idx')
        .on('production_readings')
        .column('ingested_by')
        .execute()
      await db.schema
        .createTable('production_rollups')
        .addColumn('machine_id', 'text', (c) =>
          c.notNull().references('production_machines.id').onDelete('cascade'),
        )
        .addColumn('metric', 'text', (c) => c.notNull())
        .addColumn('hour', 'timestamptz', (c) => c.notNull())
        .addColumn('readings', 'integer', (c) => c.notNull())
        .addColumn('min_value', 'double precision', (c) => c.notNull())
        .addColumn('max_value', 'double precision', (c) => c.notNull())
        .addColumn('avg_value', 'double precision', (c) => c.notNull())
        .addPrimaryKeyConstraint('production_rollups_pk', ['machine_id', 'metric', 'hour'])
        .execute()
      await db.schema
        .createTable('production_alerts')
        .addColumn('id', 'uuid', (c) => c.primaryKey().defaultTo(sql`gen_random_uuid()`))
        .addColumn('machine_id', 'text', (c) =>
          c.notNull().references('production_machines.id').onDelete('cascade'),
        )
        .addColumn('metric', 'text', (c) => c.notNull())
        .addColumn('value', 'double precision', (c) => c.notNull())
        .addColumn('bound', 'text', (c) => c.notNull().check(sql`bound in ('min', 'max')`))
        .addColumn('limit_value', 'double precision', (c) => c.notNull())
        .addColumn('recorded_at', 'timestamptz', (c) => c.notNull())
        .addColumn('acknowledged_by', 'uuid')
        .addColumn('acknowledged_at', 'timestamptz')
        .execute()
      await db.schema
        .createTable('production_watches')
        .addColumn('user_id', 'uuid', (c) => c.notNull())
        .addColumn('machine_id', 'text', (c) =>
          c.notNull().references('production_machines.id').onDelete('cascade'),
        )
        .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
        .addPrimaryKeyConstraint('production_watches_pk', ['user_id', 'machine_id'])
        .execute()
    },
    async down(db) {
      for (const table of [
        'production_watches',
        'production_alerts',
        'production_rollups',
        'production_readings',
        'production_thresholds',
        'production_machines',
      ])
        await db.schema.dropTable(table).execute()
    },
  },
}
