/** What the import benchmarks share: the table, the module that declares it importable, a row. */
import { sql } from 'kysely'
import { Type } from 'typebox'
import { defineImportable } from '../../src/core/import.ts'
import type { PlinthModule } from '../../src/core/module.ts'

export const TABLE_SQL = (name: string) => `create table ${name} (
  id text primary key,
  name text not null,
  qty integer not null,
  at timestamptz not null,
  flag boolean not null
)`

export const benchModule: PlinthModule = {
  name: 'bench',
  migrations: {
    '9901-bench-import': {
      async up(db) {
        await sql.raw(TABLE_SQL('bench_import_items')).execute(db)
      },
      async down(db) {
        await db.schema.dropTable('bench_import_items').execute()
      },
    },
  },
  importables: [
    defineImportable({
      name: 'items',
      table: 'bench_import_items',
      key: ['id'],
      schema: Type.Object(
        {
          id: Type.String({ minLength: 1 }),
          name: Type.String(),
          qty: Type.Integer(),
          at: Type.String({ format: 'date-time' }),
          flag: Type.Boolean(),
        },
        { additionalProperties: false },
      ),
    }),
  ],
}

export const item = (i: number) => ({
  id: `item-${String(i).padStart(9, '0')}`,
  name: `item number ${i}, a thing of some sort`,
  qty: i % 10_000,
  at: new Date(Date.UTC(2024, 0, 1) + i * 1000).toISOString(),
  flag: i % 3 === 0,
})
