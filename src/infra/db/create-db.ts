import { join, resolve } from 'node:path'
import { PGlite } from '@electric-sql/pglite'
import { createPgConfig } from '@electric-sql/pglite/node-postgres'
import { Kysely, PostgresDialect } from 'kysely'
import pg from 'pg'
import type { Logger } from 'pino'
import type { PlinthConfig } from '../../config/config.schema.ts'
import { redactUrl } from '../../config/load-config.ts'
import { PlinthError } from '../../shared/errors.ts'
import { lockDataDir } from './embedded-lock.ts'
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
 * node-postgres `Pool` (PGlite through its node-postgres adapter, one connection), so Kysely,
 * migrations and every module run the same SQL on both.
 */
export interface Database {
  readonly kind: 'embedded' | 'postgres'
  /** Where the data lives, without credentials. */
  readonly target: string
  readonly pool: pg.Pool
  readonly kysely: Kysely<PlinthTables>
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
  | 'dbIdleTimeout'
  | 'dbConnectDeadline'
>

/** Creates the handle without connecting; `connect()` does that. */
export async function createDatabase(config: DbConfig, deps: { logger: Logger }): Promise<Database> {
  const log = deps.logger.child({ component: 'database' })
  let pool: pg.Pool
  let closeEmbedded = async () => {}
  let dumpDataDir: (() => Promise<Blob>) | undefined
  let kind: Database['kind']
  let target: string

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
    })
  } else {
    kind = 'embedded'
    const inMemory = config.dataDir === IN_MEMORY
    const dir = inMemory ? IN_MEMORY : resolve(config.dataDir)
    target = inMemory ? 'embedded (in memory)' : `embedded (${join(dir, 'pglite')})`
    const unlock = inMemory ? () => {} : lockDataDir(dir)
    let lite: PGlite
    try {
      lite = await PGlite.create(inMemory ? IN_MEMORY : join(dir, 'pglite'))
    } catch (err) {
      unlock()
      throw err
    }
    pool = new pg.Pool({ ...(createPgConfig(lite) as pg.PoolConfig), max: 1, idleTimeoutMillis: 0 })
    dumpDataDir = () => lite.dumpDataDir('none')
    closeEmbedded = async () => {
      await lite.close()
      unlock()
    }
  }

  // An idle client whose server went away emits here; without a listener it would crash the process.
  pool.on('error', (err) =>
    log.warn(
      { err: { message: err.message, code: (err as { code?: string }).code } },
      'idle database connection lost',
    ),
  )

  const kysely = new Kysely<PlinthTables>({ dialect: new PostgresDialect({ pool }) })
  let closed = false

  return Object.freeze({
    kind,
    target,
    dumpDataDir,
    pool,
    kysely,
    async connect(signal?: AbortSignal) {
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
