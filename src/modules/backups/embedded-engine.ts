import { existsSync, readdirSync, renameSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { PGlite } from '@electric-sql/pglite'
import { Kysely, PostgresDialect } from 'kysely'
import pg from 'pg'
import type { Logger } from 'pino'
import type { Database } from '../../infra/db/create-db.ts'
import { lockDataDir } from '../../infra/db/embedded-lock.ts'
import { startEmbeddedServer } from '../../infra/db/embedded-server.ts'
import type { PlinthTables } from '../../infra/db/tables.ts'
import { PlinthError } from '../../shared/errors.ts'

/**
 * The embedded engine, all in this file so that it can later run where the PGlite instance lives
 * (a worker thread behind a socket): PGlite's own `dumpDataDir` (a tar of its data directory) to
 * back up, `loadDataDir` to restore, into a fresh in-memory PGlite to verify.
 *
 * Once the embedded database answers on a socket, `pg_dump`/`pg_restore` over that socket would
 * make both backends one engine (see docs/decisions/0014-backup-archive-format.md); PGlite's
 * single connection and its pg_dump compatibility must be checked first.
 */
export interface EmbeddedEngine {
  /** The data directory as a byte stream. */
  dump(): Promise<AsyncIterable<Uint8Array>>
}

/** The engine over the running embedded database. */
export function embeddedEngine(db: Pick<Database, 'dumpDataDir'>): EmbeddedEngine {
  return {
    async dump() {
      // Embedded, but reached through a running server's socket (the CLI): the data directory
      // belongs to that process.
      if (!db.dumpDataDir) throw new PlinthError('PLINTH_BACKUP_SERVER_ONLY')
      const blob = await db.dumpDataDir()
      return blob.stream() as unknown as AsyncIterable<Uint8Array>
    },
  }
}

/**
 * An in-memory PGlite loaded from a dump, with a Kysely handle; `close()` discards it. It runs in a
 * worker thread behind its own socket (like the live embedded database), so that loading and
 * checking a backup never blocks the server's event loop.
 */
export async function openScratchPglite(
  dump: readonly Uint8Array[],
  logger: Logger,
): Promise<{ kysely: Kysely<PlinthTables>; close(): Promise<void> }> {
  const server = startEmbeddedServer({
    dataDir: null,
    logger,
    maxConnections: 2,
    startTimeoutMs: 10 * 60_000,
    useTemplate: false,
    loadDump: dump,
  })
  try {
    await server.whenUp()
  } catch (err) {
    await server.close().catch(() => {})
    throw new PlinthError(
      'PLINTH_BACKUP_ENGINE_FAILED',
      `PGlite could not load the backed-up data directory: ${(err as Error).message}.`,
    )
  }
  const pool = new pg.Pool({
    host: server.socketDir,
    port: server.socketPort,
    user: 'postgres',
    database: 'postgres',
    max: 1,
    idleTimeoutMillis: 0,
  })
  const kysely = new Kysely<PlinthTables>({ dialect: new PostgresDialect({ pool }) })
  return {
    kysely,
    async close() {
      await kysely.destroy()
      await server.close()
    },
  }
}

/**
 * Restores a dump into `<dataDir>/pglite` (what `PLINTH_DATA_DIR=<dataDir>` opens). An existing,
 * non-empty one is refused unless `force`; then it is moved aside to `pglite.replaced-<time>`,
 * never deleted. The directory must not be in use (a running Plinth holds its lock).
 * @returns where the replaced directory went, if any.
 */
export async function restoreToDataDir(
  dump: readonly Uint8Array[],
  dataDir: string,
  options: { force: boolean; now?: Date },
): Promise<{ replaced?: string }> {
  const dir = join(resolve(dataDir), 'pglite')
  // Held while restoring: refuses a directory a running Plinth uses (PLINTH_DB_LOCKED).
  const unlock = lockDataDir(resolve(dataDir))
  try {
    return await restoreLocked(dump, dir, options)
  } finally {
    unlock()
  }
}

async function restoreLocked(
  dump: readonly Uint8Array[],
  dir: string,
  options: { force: boolean; now?: Date },
): Promise<{ replaced?: string }> {
  let replaced: string | undefined
  if (existsSync(dir) && readdirSync(dir).length > 0) {
    if (!options.force)
      throw new PlinthError(
        'PLINTH_BACKUP_TARGET_NOT_EMPTY',
        `${dir} already holds a database: restore into another --data-dir, or pass --force --yes (it is moved aside, not deleted).`,
      )
    replaced = `${dir}.replaced-${(options.now ?? new Date()).toISOString().replace(/[:.]/g, '-')}`
    renameSync(dir, replaced)
  }
  try {
    const lite = await PGlite.create(dir, { loadDataDir: new Blob(dump as Uint8Array<ArrayBuffer>[]) })
    await lite.query('select 1')
    await lite.close()
  } catch (err) {
    throw new PlinthError(
      'PLINTH_BACKUP_ENGINE_FAILED',
      `PGlite could not restore into ${dir}: ${(err as Error).message}.`,
    )
  }
  return replaced ? { replaced } : {}
}
