import { sql } from 'kysely'
import type { Database } from '../../src/infra/db/create-db.ts'
import { MIGRATION_LOCK_TABLE, MIGRATION_TABLE } from '../../src/infra/db/migrator.ts'

/**
 * A comparable description of the public schema (tables, columns, constraints, indexes, triggers),
 * without the migrator's own tables: equal snapshots mean equal schemas.
 */
export async function schemaSnapshot(db: Database): Promise<string> {
  const skip = [MIGRATION_TABLE, MIGRATION_LOCK_TABLE]
  const { rows: columns } = await sql<Record<string, unknown>>`
    select table_name, column_name, data_type, is_nullable, column_default
    from information_schema.columns where table_schema = 'public'
    order by table_name, column_name`.execute(db.kysely)
  const { rows: constraints } = await sql<Record<string, unknown>>`
    select cl.relname as table_name, co.conname, pg_get_constraintdef(co.oid) as def
    from pg_constraint co join pg_class cl on cl.oid = co.conrelid
    join pg_namespace n on n.oid = cl.relnamespace where n.nspname = 'public'
    order by 1, 2`.execute(db.kysely)
  const { rows: indexes } = await sql<Record<string, unknown>>`
    select tablename as table_name, indexname, indexdef from pg_indexes where schemaname = 'public' order by 1, 2`.execute(
    db.kysely,
  )
  const { rows: triggers } = await sql<Record<string, unknown>>`
    select event_object_table as table_name, trigger_name, action_statement
    from information_schema.triggers where trigger_schema = 'public' order by 1, 2`.execute(db.kysely)
  const { rows: functions } = await sql<Record<string, unknown>>`
    select p.proname as table_name, pg_get_functiondef(p.oid) as def from pg_proc p
    join pg_namespace n on n.oid = p.pronamespace where n.nspname = 'public' order by 1`.execute(db.kysely)
  const keep = (rows: Record<string, unknown>[]) => rows.filter((r) => !skip.includes(String(r.table_name)))
  return JSON.stringify({
    columns: keep(columns),
    constraints: keep(constraints),
    indexes: keep(indexes),
    triggers: keep(triggers),
    functions,
  })
}
