import type pg from 'pg'
import type { Logger } from 'pino'

/** The error node-postgres gives a query whose answer did not arrive within `query_timeout`. */
const READ_TIMEOUT = 'Query read timeout'

type QueryFn = (...args: unknown[]) => unknown

/**
 * Makes connection faults cost the queries in flight and nothing more.
 *
 * - node-postgres emits `'error'` on a client whose connection breaks (reset, server gone), and
 *   pg-pool listens only while the client sits idle in the pool. A client checked out by Kysely
 *   (for one statement or a transaction) had no listener, so a reset in the middle of a query was
 *   an uncaught exception and the process exited. Every client now gets a permanent listener: the
 *   query in flight fails with the error (→ 503), the broken client is discarded on release.
 * - A query whose answer never comes (a half-open connection: nothing closes, nothing gets
 *   through) fails after `query_timeout`, but node-postgres keeps the connection, still waiting for
 *   that answer, and Kysely returns it to the pool, where every later query would wait behind it.
 *   Such a connection is ended at once, so the pool drops it and opens a fresh one.
 */
export function guardPoolClients(pool: pg.Pool, log: Logger): void {
  // An idle client whose server went away emits here; without a listener it would crash the process.
  pool.on('error', (err) =>
    log.warn(
      { err: { message: err.message, code: (err as { code?: string }).code } },
      'idle database connection lost',
    ),
  )
  pool.on('connect', (client) => {
    client.on('error', (err) =>
      log.debug(
        { err: { message: err.message, code: (err as { code?: string }).code } },
        'database connection broke (the statements on it fail and it is discarded)',
      ),
    )
    endOnReadTimeout(client, log)
  })
}

function endOnReadTimeout(client: pg.PoolClient, log: Logger): void {
  const query = client.query.bind(client) as QueryFn
  const settled = (err: unknown) => {
    if (!(err instanceof Error) || err.message !== READ_TIMEOUT) return
    log.warn('database did not answer within PLINTH_DB_QUERY_TIMEOUT; dropping the connection')
    // With a query still on the wire, end() destroys the socket; pg-pool then removes the client.
    client.end().catch(() => {})
  }
  const guarded: QueryFn = (...args) => {
    const last = args.at(-1)
    if (typeof last === 'function') {
      args[args.length - 1] = (err: unknown, result: unknown) => {
        settled(err)
        ;(last as (err: unknown, result: unknown) => void)(err, result)
      }
      return query(...args)
    }
    const result = query(...args)
    if (result instanceof Promise) result.catch(settled)
    return result
  }
  ;(client as unknown as { query: QueryFn }).query = guarded
}
