import { randomBytes } from 'node:crypto'
import { type Kysely, sql } from 'kysely'
import pg from 'pg'

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

/** Runs `fn` with one client of the server at `url`, closed afterwards. */
export async function withClient<T>(url: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  try {
    return await fn(client)
  } finally {
    await client.end()
  }
}

/**
 * A new database on the server of `serverUrl`, holding `bench_items` (ROWS rows), for one run of
 * run.ts or decompose.ts; `drop()` removes it, whoever still uses it.
 */
export async function scratchDatabase(
  serverUrl: string,
  prefix: string,
): Promise<{ name: string; url: string; drop(): Promise<void> }> {
  const name = `${prefix}_${process.pid}_${randomBytes(3).toString('hex')}`
  await withClient(serverUrl, (c) => c.query(`create database ${name}`))
  const url = new URL(serverUrl)
  url.pathname = `/${name}`
  const drop = () =>
    withClient(serverUrl, (c) => c.query(`drop database if exists ${name} with (force)`)).then(
      () => undefined,
    )
  try {
    await withClient(url.toString(), async (c) => {
      await c.query(CREATE_ITEMS)
      await c.query(`insert into bench_items (id) select g from generate_series(1, ${ROWS}) g`)
    })
  } catch (err) {
    await drop()
    throw err
  }
  return { name, url: url.toString(), drop }
}
