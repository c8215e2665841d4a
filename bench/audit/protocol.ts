import { randomBytes } from 'node:crypto'
import { type Kysely, sql } from 'kysely'

/** What bench/audit/run.ts and its server child (bench/audit/server.ts) share. */

/** The child's messages over the IPC channel; the parent sends `'stop'`. */
export type ServerMessage =
  | { type: 'ready'; port: number; token: string }
  | { type: 'failed'; message: string }

/** Rows the change picks from at random, so that writers rarely wait on one another's row lock. */
export const ROWS = 1000
/** POST: in one transaction, add 1 to `plain` of a random `bench_items` row (applyChange). */
export const CHANGE = '/bench/change'
/** POST: the same change on `audited`, plus its audit row in the same transaction. */
export const AUDITED_CHANGE = '/bench/audited-change'
/**
 * The change itself, the shape of every audited change that carries a before/after diff (a
 * setting, a role, a flag): read the current value under a row lock, write the new one. `column`
 * is `plain` or `audited`, so that the two kinds can be counted apart.
 */
export async function applyChange(
  // biome-ignore lint/suspicious/noExplicitAny: bench_items is not one of Plinth's tables
  trx: Kysely<any>,
  column: 'plain' | 'audited',
  id: number,
): Promise<{ before: number; after: number }> {
  const ref = sql.ref(column)
  const { rows } = await sql<{ value: number }>`
    select ${ref} as value from bench_items where id = ${id} for update`.execute(trx)
  const before = rows[0]!.value
  await sql`update bench_items set ${ref} = ${before + 1}, updated_at = now() where id = ${id}`.execute(trx)
  return { before, after: before + 1 }
}

/** The audit action of AUDITED_CHANGE. */
export const ACTION = 'bench-item:updated'

/** The scratch table the change updates (created by the parent before any server starts). */
export const CREATE_ITEMS = `create table bench_items (
  id integer primary key,
  plain integer not null default 0,
  audited integer not null default 0,
  updated_at timestamptz not null default now()
)`

/**
 * The keys every Plinth of one run uses (the scratch database keeps data keys wrapped under the
 * master key, so each server start must present the same one): drawn once by the parent, inherited
 * by its children through the environment.
 */
export function sharedKeys(): { PLINTH_MASTER_KEY: string; PLINTH_SECRET_KEY: string } {
  process.env.BENCH_AUDIT_MASTER_KEY ??= randomBytes(32).toString('base64')
  process.env.BENCH_AUDIT_SECRET_KEY ??= randomBytes(48).toString('base64')
  return {
    PLINTH_MASTER_KEY: process.env.BENCH_AUDIT_MASTER_KEY,
    PLINTH_SECRET_KEY: process.env.BENCH_AUDIT_SECRET_KEY,
  }
}
