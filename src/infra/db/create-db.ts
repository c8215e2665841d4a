import { existsSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { Kysely, PostgresDialect } from 'kysely'
import pg from 'pg'
import type { Logger } from 'pino'
import type { PlinthConfig } from '../../config/config.schema.ts'
import { redactUrl } from '../../config/load-config.ts'
import { PlinthError } from '../../shared/errors.ts'
import { useDeferredStatements } from './deferred-statements.ts'
import { lockDataDir } from './embedded-lock.ts'
import { embeddedServerSizing, type PrestartedDatabase } from './embedded-prestart.ts'
import { type EmbeddedServer, SOCKET_FILE, SOCKET_PORT, startEmbeddedServer } from './embedded-server.ts'
import { guardPoolClients } from './pool-errors.ts'
import { usePreparedStatements } from './prepared-statements.ts'
import { RetryDeadlineError, retryWithBackoff } from './retry.ts'
import type { PlinthTables } from './tables.ts'

/** Data directory value that keeps the embedded database in memory (tests, benchmarks). */
export const IN_MEMORY = 'memory://'

export interface PoolStats {
  readonly total: number
  readonly idle: number
  readonly waiting: number
  readonly max: number
}

/**
 * The one database handle. The embedded PGlite and a PostgreSQL server both sit behind a
 * node-postgres `Pool` (PGlite in a worker thread behind a Unix socket, see embedded-server.ts),
 * so Kysely, migrations and every module run the same SQL on both.
 */
export interface Database {
  readonly kind: 'embedded' | 'postgres'
  /** Where the data lives, without credentials. */
  readonly target: string
  readonly pool: pg.Pool
  readonly kysely: Kysely<PlinthTables>
  /** The embedded database's worker (embedded kind only). */
  readonly embedded?: EmbeddedServer
  /** Waits until the database answers, retrying with backoff up to `PLINTH_DB_CONNECT_DEADLINE`. */
  connect(signal?: AbortSignal): Promise<void>
  /** One round trip; rejects when the database does not answer within `timeoutMs`. */
  ping(timeoutMs: number): Promise<void>
  poolStats(): PoolStats
  /**
   * Embedded only: PGlite's own copy of its data directory (a tar, uncompressed), what backups of
   * the embedded database are made of. Undefined on a PostgreSQL server (use pg_dump there).
   */
  readonly dumpDataDir?: (() => Promise<Blob>) | undefined
  close(): Promise<void>
}

type DbConfig = Pick<
  PlinthConfig,
  | 'databaseUrl'
  | 'dataDir'
  | 'dbPoolMax'
  | 'dbConnectTimeout'
  | 'dbStatementTimeout'
  | 'dbQueryTimeout'
  | 'dbIdleTimeout'
  | 'dbConnectDeadline'
> &
  Partial<Pick<PlinthConfig, 'dbPreparedStatements'>>

/**
 * Creates the handle without connecting; `connect()` does that. `attachToRunning` (the CLI): when
 * another process (a running server) holds the embedded data directory, connect through its socket
 * instead of failing with PLINTH_DB_LOCKED.
 */
export async function createDatabase(
  config: DbConfig,
  deps: {
    logger: Logger
    attachToRunning?: boolean
    /** The migration set this start applies (migrationSetKey): a new embedded cluster starts from its cached, migrated template. */
    migrationSetKey?: string | undefined
    /**
     * The key comes later, through `embedded.setMigrationSetKey` (createPlinth, once the job engine
     * that adds to the template exists): a new embedded cluster waits for it; an existing one opens at once.
     */
    awaitMigrationSetKey?: boolean | undefined
    /**
     * An embedded database `plinth start` started before loading the application
     * (embedded-prestart.ts): adopted when it holds this data directory (then given the migration
     * set), closed otherwise.
     */
    prestarted?: PrestartedDatabase | undefined
  },
): Promise<Database> {
  const log = deps.logger.child({ component: 'database' })
  let pool: pg.Pool
  let closeEmbedded = async () => {}
  let dumpDataDir: (() => Promise<Blob>) | undefined
  let kind: Database['kind']
  let target: string
  let embedded: EmbeddedServer | undefined

  if (config.databaseUrl) {
    kind = 'postgres'
    target = redactUrl(config.databaseUrl)
    pool = new pg.Pool({
      connectionString: config.databaseUrl,
      max: config.dbPoolMax,
      connectionTimeoutMillis: config.dbConnectTimeout,
      idleTimeoutMillis: config.dbIdleTimeout,
      application_name: 'plinth',
      ...(config.dbStatementTimeout > 0 ? { statement_timeout: config.dbStatementTimeout } : {}),
      ...(config.dbQueryTimeout > 0 ? { query_timeout: config.dbQueryTimeout } : {}),
    })
  } else {
    kind = 'embedded'
    const inMemory = config.dataDir === IN_MEMORY
    const dir = inMemory ? IN_MEMORY : resolve(config.dataDir)
    target = inMemory ? 'embedded (in memory)' : `embedded (${join(dir, 'pglite')})`
    let unlock = () => {}
    let attached = false
    const early = deps.prestarted?.dataDir === dir ? deps.prestarted.take() : undefined
    if (!early) await deps.prestarted?.close()
    if (early) unlock = early.unlock
    else if (!inMemory) {
      try {
        unlock = lockDataDir(dir)
      } catch (err) {
        const running = (err as PlinthError).code === 'PLINTH_DB_LOCKED' && existsSync(join(dir, SOCKET_FILE))
        if (!deps.attachToRunning || !running) throw err
        attached = true
      }
    }
    if (attached) {
      // Another process serves this data directory: use its socket (it keeps the lock).
      target = `embedded (through the running server's socket in ${dir})`
      pool = embeddedPool(config, dir)
    } else {
      let server: EmbeddedServer
      if (early) {
        // Already opening (or open): a new cluster waited for the migration set to start from.
        server = early.server
        if (!deps.awaitMigrationSetKey) server.setMigrationSetKey(deps.migrationSetKey)
      } else
        try {
          // Not awaited: the worker opens the database while the application is built; connect() waits.
          server = startEmbeddedServer({
            dataDir: inMemory ? null : dir,
            logger: deps.logger,
            ...embeddedServerSizing(config),
            migrationSetKey: deps.migrationSetKey,
            awaitMigrationSetKey: deps.awaitMigrationSetKey,
          })
        } catch (err) {
          unlock()
          throw err
        }
      embedded = server
      dumpDataDir = () => server.dumpDataDir()
      pool = embeddedPool(config, server.socketDir)
      closeEmbedded = async () => {
        await server.close()
        unlock()
      }
    }
  }

  // Connection faults (idle or in use, reset or silent — or the embedded server's worker gone, which
  // resets every open socket at once) fail the statements in flight, never the process.
  guardPoolClients(pool, log)
  // Registered fixed-text writes go named on PostgreSQL (not on PGlite's shared session): prepared-statements.ts.
  if (kind === 'postgres' && config.dbPreparedStatements !== false) usePreparedStatements(pool)
  // Registered single-row inserts in a transaction leave with its next statement, in one write
  // (PostgreSQL only, like the above): deferred-statements.ts.
  if (kind === 'postgres') useDeferredStatements(pool)

  const kysely = new Kysely<PlinthTables>({ dialect: new PostgresDialect({ pool }) })
  let closed = false

  return Object.freeze({
    kind,
    target,
    dumpDataDir,
    pool,
    kysely,
    ...(embedded ? { embedded } : {}),
    async connect(signal?: AbortSignal) {
      if (embedded) {
        try {
          await embedded.whenUp()
        } catch (err) {
          throw new PlinthError(
            'PLINTH_DB_UNREACHABLE',
            `The embedded database in ${target} could not start: ${(err as Error).message}`,
            { cause: err },
          )
        }
      }
      try {
        await retryWithBackoff(
          async () => {
            const client = await pool.connect()
            try {
              await client.query('select 1')
            } finally {
              client.release()
            }
          },
          {
            deadlineMs: config.dbConnectDeadline,
            ...(signal ? { signal } : {}),
            onRetry: ({ attempt, delayMs, error }) =>
              log.warn(
                { attempt, delayMs, target, reason: (error as Error).message },
                'database not reachable, retrying',
              ),
          },
        )
        log.info({ target, kind }, 'database connected')
      } catch (err) {
        if (!(err instanceof RetryDeadlineError)) throw err
        const reason = (err.cause as Error | undefined)?.message ?? 'unknown error'
        throw new PlinthError(
          'PLINTH_DB_UNREACHABLE',
          `Could not connect to the database at ${target} within ${config.dbConnectDeadline} ms (${err.attempts} attempts; last error: ${reason}). Check DATABASE_URL and that the server runs and accepts connections from this host; PLINTH_DB_CONNECT_DEADLINE sets how long to wait.`,
          { cause: err },
        )
      }
    },
    async ping(timeoutMs: number) {
      if (embedded && !embedded.isUp()) throw new Error(embedded.downReason())
      let timer: NodeJS.Timeout | undefined
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs)
      })
      try {
        await Promise.race([pool.query('select 1'), timeout])
      } finally {
        clearTimeout(timer)
      }
    },
    poolStats() {
      return {
        total: pool.totalCount,
        idle: pool.idleCount,
        waiting: pool.waitingCount,
        max: pool.options.max ?? 1,
      }
    },
    async close() {
      if (closed) return
      closed = true
      await kysely.destroy()
      await closeEmbedded()
    },
  } satisfies Database)
}

/**
 * A pool over the embedded database's socket (`<socketDir>/.s.PGSQL.5432`), of
 * `PLINTH_DB_POOL_MAX` connections like a PostgreSQL pool. PGlite has one session; the worker hands
 * it to one connection per protocol unit (Parse…Sync, a simple query) or per transaction
 * (session-queue.ts), so the connections — this pool's and a CLI's attached to the same socket —
 * never see one another's half-sent queries, and a transaction (the backup's facts and dump, see
 * modules/backups) runs alone until it ends. More connections add no parallel execution (one
 * session): they let the worker run the next query as soon as the last one is answered instead of
 * after the main thread has read the answer and handed the connection on, so the session is not
 * idle while the event loop is busy (decision 0031). `PLINTH_DB_CONNECT_TIMEOUT` bounds the wait for
 * a connection and `PLINTH_DB_QUERY_TIMEOUT` a query's answer: code that, inside a transaction,
 * waited for a query sent through another connection would wait for its own transaction to end —
 * that fails after the query timeout instead of hanging.
 */
function embeddedPool(config: DbConfig, socketDir: string): pg.Pool {
  return new pg.Pool({
    host: socketDir,
    port: SOCKET_PORT,
    user: 'postgres',
    database: 'postgres',
    max: config.dbPoolMax,
    connectionTimeoutMillis: config.dbConnectTimeout,
    idleTimeoutMillis: config.dbIdleTimeout,
    ...(config.dbQueryTimeout > 0 ? { query_timeout: config.dbQueryTimeout } : {}),
  })
}
