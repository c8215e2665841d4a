import { sql } from 'kysely'
import { Type } from 'typebox'
import { defineImportable } from '../../src/core/import.ts'
import type { PlinthModule } from '../../src/core/module.ts'

/**
 * A module with an importable dataset, as an application would write it: `machines` rows keyed by
 * serial number, with a CSV column named differently ("Serial No") and a database check the schema
 * does not state (capacity at most 1,000,000), to see rows the database refuses rejected one by one.
 */
export const catalogModule: PlinthModule = {
  name: 'catalog',
  migrations: {
    '9101-catalog-machines': {
      async up(db) {
        await db.schema
          .createTable('catalog_machines')
          .addColumn('serial', 'text', (c) => c.primaryKey())
          .addColumn('name', 'text', (c) => c.notNull())
          .addColumn('capacity', 'integer', (c) => c.notNull().check(sql`capacity <= 1000000`))
          .addColumn('installed_at', 'timestamptz')
          .addColumn('active', 'boolean', (c) => c.notNull())
          .execute()
      },
      async down(db) {
        await db.schema.dropTable('catalog_machines').execute()
      },
    },
  },
  importables: [
    defineImportable({
      name: 'machines',
      table: 'catalog_machines',
      key: ['serial'],
      columns: { 'Serial No': 'serial' },
      schema: Type.Object(
        {
          serial: Type.String({ minLength: 1, maxLength: 64 }),
          name: Type.String({ minLength: 1 }),
          capacity: Type.Integer({ minimum: 0 }),
          installed_at: Type.Optional(Type.String({ format: 'date-time' })),
          active: Type.Boolean(),
        },
        { additionalProperties: false },
      ),
    }),
  ],
}

/** One valid machine row (as NDJSON/JSON would hold it). */
export function machine(i: number, extra: Record<string, unknown> = {}) {
  return {
    serial: `M-${String(i).padStart(8, '0')}`,
    name: `press ${i}`,
    capacity: i % 1000,
    installed_at: new Date(Date.UTC(2024, 0, 1) + i * 60_000).toISOString(),
    active: i % 2 === 0,
    ...extra,
  }
}
