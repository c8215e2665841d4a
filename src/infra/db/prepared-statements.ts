import { createHash } from 'node:crypto'
import type pg from 'pg'

/**
 * Named prepared statements for a few fixed-text writes Plinth sends on every request of a kind
 * (the audit row: docs/decisions/0035-audited-write-cost.md).
 *
 * Kysely sends every statement unnamed, so PostgreSQL parses, analyses and plans it on each
 * execution. A statement registered here with `preparedStatement(text)` is sent by the pool's
 * clients as `{ name, text, values }` instead: node-postgres parses it once per connection (it
 * remembers which names its connection has parsed) and afterwards sends only Bind and Execute.
 *
 * What keeps this safe:
 * - Only writes that return no rows (`insert`, `update`, `delete` without `returning`) can be
 *   registered. PostgreSQL re-plans a prepared statement by itself after any schema change (a
 *   migration adding a column, changing a type, dropping and re-creating the table); the one error
 *   it raises instead, "cached plan must not change result type", needs a result, which these
 *   statements never have.
 * - The registry is bounded (REGISTRY_LIMIT fixed texts, registered at module load), so a
 *   connection never holds more than that many statements.
 * - Names are derived from the text, so the same text always gets the same name and two texts
 *   never share one.
 * - Prepared statements live and die with their connection: a connection reset gives a new client,
 *   which parses again on first use.
 * - Installed on PostgreSQL pools only. The embedded database's connections share PGlite's single
 *   session (session-queue.ts), where a name parsed by one connection already exists for the next
 *   (PostgreSQL refuses the second Parse) and outlives the connection that made it; there the
 *   statements stay unnamed, as before.
 */

/** At most this many texts can be registered (each connection may hold all of them). */
export const REGISTRY_LIMIT = 32

const names = new Map<string, string>()

/** A write that returns no rows: insert, update or delete, without `returning`. */
const ROWLESS_WRITE = /^\s*(insert|update|delete)\b/i
const RETURNING = /\breturning\b/i

/**
 * Registers `text` to be sent as a named prepared statement on PostgreSQL and returns it unchanged
 * (run it as usual, e.g. `db.executeQuery(CompiledQuery.raw(text, values))`).
 * @throws TypeError for a statement that may return rows, or past REGISTRY_LIMIT texts.
 */
export function preparedStatement(text: string): string {
  if (names.has(text)) return text
  if (!ROWLESS_WRITE.test(text) || RETURNING.test(text))
    throw new TypeError(
      'only an insert, update or delete without returning can be a prepared statement (its result type can never go stale)',
    )
  if (names.size >= REGISTRY_LIMIT)
    throw new TypeError(`at most ${REGISTRY_LIMIT} prepared statements can be registered`)
  names.set(text, `plinth_${createHash('sha256').update(text).digest('hex').slice(0, 24)}`)
  return text
}

/** The name `text` is prepared under, or undefined when it is not registered. */
export function preparedName(text: string): string | undefined {
  return names.get(text)
}

type QueryFn = (...args: unknown[]) => unknown

/**
 * Makes every client of `pool` send registered statements named. Statements without parameters
 * and everything else pass through untouched.
 */
export function usePreparedStatements(pool: pg.Pool): void {
  pool.on('connect', (client) => {
    const query = client.query.bind(client) as QueryFn
    const named: QueryFn = (...args) => {
      const [text, values] = args
      if (typeof text === 'string' && Array.isArray(values) && values.length > 0) {
        const name = names.get(text)
        if (name) return query({ name, text, values }, ...args.slice(2))
      }
      return query(...args)
    }
    ;(client as unknown as { query: QueryFn }).query = named
  })
}
