import { resolve } from 'node:path'
import type { Logger } from 'pino'
import type { PlinthConfig } from '../../config/config.schema.ts'
import { lockDataDir } from './embedded-lock.ts'
import { type EmbeddedServer, startEmbeddedServer } from './embedded-server.ts'

/** Data directory value that keeps the embedded database in memory (tests, benchmarks). */
const IN_MEMORY = 'memory://'

type PrestartConfig = Pick<PlinthConfig, 'databaseUrl' | 'dataDir' | 'dbPoolMax' | 'dbConnectDeadline'>

/** The embedded server's sizing, the same whether it was started early or by createDatabase. */
export function embeddedServerSizing(config: Pick<PlinthConfig, 'dbPoolMax' | 'dbConnectDeadline'>) {
  return {
    // The pool, plus room for CLIs (each a pool of the same size) connecting through the same socket.
    maxConnections: 2 * config.dbPoolMax + 8,
    startTimeoutMs: Math.max(config.dbConnectDeadline, 30_000),
  }
}

/**
 * An embedded database started before the application was loaded: its data directory is locked
 * and its worker opens the cluster while the main thread imports the modules. `createDatabase`
 * adopts it (given as `prestarted`); until then `close()` stops it and releases the lock.
 */
export interface PrestartedDatabase {
  /** The data directory (resolved) it holds. */
  readonly dataDir: string
  readonly server: EmbeddedServer
  /** Hands the server and its lock to the caller (once); undefined when already taken or closed. */
  take(): { server: EmbeddedServer; unlock: () => void } | undefined
  /** Stops the worker and releases the lock, unless `take()` handed them on. */
  close(): Promise<void>
}

/**
 * `plinth start`, first thing: when the embedded database is file-backed, takes its data
 * directory's lock and spawns the worker, which opens an existing cluster at once (a new one waits
 * for the migration set: `setMigrationSetKey`, given by createDatabase). Undefined when there is
 * nothing to start early (DATABASE_URL, `memory://`) or the lock is not free — createDatabase then
 * does what it always did (and reports PLINTH_DB_LOCKED).
 */
export function prestartEmbeddedDatabase(
  config: PrestartConfig,
  deps: { logger: Logger },
): PrestartedDatabase | undefined {
  if (config.databaseUrl || config.dataDir === IN_MEMORY) return undefined
  const dataDir = resolve(config.dataDir)
  let unlock: () => void
  try {
    unlock = lockDataDir(dataDir)
  } catch {
    return undefined
  }
  let server: EmbeddedServer
  try {
    server = startEmbeddedServer({
      dataDir,
      logger: deps.logger,
      ...embeddedServerSizing(config),
      awaitMigrationSetKey: true,
    })
  } catch {
    unlock()
    return undefined
  }
  let held = true
  return {
    dataDir,
    server,
    take() {
      if (!held) return undefined
      held = false
      return { server, unlock }
    },
    async close() {
      if (!held) return
      held = false
      try {
        await server.close()
      } finally {
        unlock()
      }
    },
  }
}
