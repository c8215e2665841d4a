import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { Kysely, PostgresDialect, sql } from 'kysely'
import pg from 'pg'
import type { PlinthTables } from '../../infra/db/tables.ts'
import { PlinthError } from '../../shared/errors.ts'

/**
 * The PostgreSQL server engine: `pg_dump -Fc` and `pg_restore` from the Debian postgresql-client of
 * the server's major version (PATH, or PLINTH_BACKUP_PG_BIN). Plinth drives them; it does not
 * reimplement them. The password goes in the child's environment (PGPASSWORD), never its argv,
 * which other users of the host can read.
 */
export interface PgConnection {
  /** The URL without its password, for argv. */
  readonly dbname: string
  readonly env: NodeJS.ProcessEnv
}

export function pgConnection(url: string): PgConnection {
  const u = new URL(url)
  const password = decodeURIComponent(u.password)
  u.password = ''
  return { dbname: u.toString(), env: { ...process.env, ...(password ? { PGPASSWORD: password } : {}) } }
}

function engineFailed(tool: string, code: number | null, stderr: string): PlinthError {
  // pg_restore prints the failing statement after its "error:" line: keep the error lines first.
  const lines = stderr.trim().split('\n')
  const errors = lines.filter((l) => /\b(error|fatal):/i.test(l))
  const tail = (errors.length ? errors.slice(-3) : lines.slice(-3)).join(' | ').slice(0, 600)
  return new PlinthError(
    'PLINTH_BACKUP_ENGINE_FAILED',
    `${tool} failed (exit ${code ?? 'signal'}): ${tail || 'no message'}.`,
  )
}

function bin(dir: string | undefined, tool: string): string {
  return dir ? `${dir.replace(/\/$/, '')}/${tool}` : tool
}

/**
 * `pg_dump -Fc` of the database at `url`, as a byte stream; with `snapshot`, the dump sees exactly
 * the snapshot exported by a transaction the caller keeps open (so row counts taken in that
 * transaction match the dump). Throws `PLINTH_BACKUP_ENGINE_FAILED` at the end when pg_dump fails.
 */
export async function* pgDump(
  url: string,
  options: { snapshot?: string; binDir?: string | undefined; signal?: AbortSignal } = {},
): AsyncGenerator<Buffer> {
  const c = pgConnection(url)
  const args = ['--format=custom', '--compress=0', '--no-password', `--dbname=${c.dbname}`]
  if (options.snapshot) args.push(`--snapshot=${options.snapshot}`)
  const child = spawn(bin(options.binDir, 'pg_dump'), args, {
    env: c.env,
    stdio: ['ignore', 'pipe', 'pipe'],
    ...(options.signal ? { signal: options.signal } : {}),
  })
  let stderr = ''
  child.stderr.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString('utf8')).slice(-4000)
  })
  const exited = new Promise<number | null>((resolve, reject) => {
    child.on('error', reject)
    child.on('close', resolve)
  })
  // A spawn failure (no such binary, an aborted signal) rejects before anything awaits this:
  // handled here, still thrown where it is awaited (an unhandled rejection would end the process).
  exited.catch(() => {})
  try {
    for await (const chunk of child.stdout) yield chunk as Buffer
    const code = await exited
    if (code !== 0) throw engineFailed('pg_dump', code, stderr)
  } finally {
    if (child.exitCode === null) child.kill('SIGTERM')
  }
}

/**
 * Feeds a `pg_dump -Fc` stream to `pg_restore` into the database at `url`. With `clean`, objects
 * the dump holds are dropped first (`--clean --if-exists`). One transaction (`--single-transaction`):
 * a restore that fails leaves the target as it was.
 */
export async function pgRestore(
  url: string,
  dump: AsyncIterable<Uint8Array>,
  options: { clean?: boolean; binDir?: string | undefined } = {},
): Promise<void> {
  const c = pgConnection(url)
  const args = [
    '--no-owner',
    '--no-acl',
    '--single-transaction',
    '--exit-on-error',
    '--no-password',
    `--dbname=${c.dbname}`,
  ]
  if (options.clean) args.push('--clean', '--if-exists')
  const child = spawn(bin(options.binDir, 'pg_restore'), args, {
    env: c.env,
    stdio: ['pipe', 'ignore', 'pipe'],
  })
  let stderr = ''
  child.stderr.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString('utf8')).slice(-4000)
  })
  const exited = new Promise<number | null>((resolve, reject) => {
    child.on('error', reject)
    child.on('close', resolve)
  })
  // A spawn failure (no such binary, an aborted signal) rejects before anything awaits this:
  // handled here, still thrown where it is awaited (an unhandled rejection would end the process).
  exited.catch(() => {})
  try {
    await pipeline(Readable.from(dump), child.stdin)
  } catch (err) {
    child.kill('SIGTERM')
    await exited.catch(() => {})
    if ((err as NodeJS.ErrnoException).code === 'EPIPE')
      throw engineFailed('pg_restore', child.exitCode, stderr)
    throw err
  }
  const code = await exited
  if (code !== 0) throw engineFailed('pg_restore', code, stderr)
}

/** A Kysely handle over `url` with one connection, closed by `close()`. */
export function connectTo(url: string): { kysely: Kysely<PlinthTables>; close(): Promise<void> } {
  const pool = new pg.Pool({ connectionString: url, max: 1, application_name: 'plinth-backup' })
  pool.on('error', () => {})
  const kysely = new Kysely<PlinthTables>({ dialect: new PostgresDialect({ pool }) })
  return { kysely, close: () => kysely.destroy() }
}

/**
 * A new empty database beside the one at `url` (same server and credentials), for verifying a
 * backup; `drop()` removes it (forcing out any connection left).
 */
export async function createScratchDatabase(url: string): Promise<{ url: string; drop(): Promise<void> }> {
  const name = `plinth_verify_${randomBytes(6).toString('hex')}`
  const admin = connectTo(url)
  try {
    await sql.raw(`create database ${name}`).execute(admin.kysely)
  } finally {
    await admin.close()
  }
  const u = new URL(url)
  u.pathname = `/${name}`
  return {
    url: u.toString(),
    async drop() {
      const again = connectTo(url)
      try {
        await sql.raw(`drop database if exists ${name} with (force)`).execute(again.kysely)
      } finally {
        await again.close()
      }
    },
  }
}
