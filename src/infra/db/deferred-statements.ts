import pg from 'pg'
import { preparedName } from './prepared-statements.ts'

/**
 * Deferred inserts: a registered single-row insert run inside a transaction on PostgreSQL is not
 * sent at once but written to the connection together with the transaction's next statement — its
 * COMMIT, usually — in one write, so it costs no round trip of its own (the audit row of an
 * audited change: docs/decisions/0038-audited-write-round-trip.md).
 *
 * What a caller sees, and why it is the same transaction as before:
 * - The statement still runs in the caller's transaction, before anything the transaction does
 *   after it (the connection sends it first, in the same write): later statements see its row; a
 *   `rollback to savepoint` that follows rolls it back; it commits iff the transaction commits.
 * - Its own promise resolves at once with one inserted row (`rowCount` 1, no rows: only inserts of
 *   exactly one row without `returning` or `on conflict` can be registered). If the database
 *   refuses it, the refusal is the error of the statement it was sent with: the COMMIT (which then
 *   rolls the transaction back: PostgreSQL ends a transaction that had an error with a rollback)
 *   or the next statement. So the transaction never commits without the row, and the caller still
 *   gets the database's error, one statement later than without deferral. The one difference that
 *   can show: code that catches a failed insert and rolls back to a savepoint set before it must
 *   also cover the statement after the insert.
 * - A `rollback` drops what is deferred (it would be undone anyway) without sending it.
 * - Outside a transaction (autocommit), in a failed transaction, and on the embedded database
 *   (whose connections share PGlite's one session, decision 0031: installed on PostgreSQL pools
 *   only) the statement runs at once, as before.
 *
 * How: when the next statement is the COMMIT and every deferred statement is already prepared on
 * the connection (prepared-statements.ts; from its second use on a connection), the deferred
 * statements and the COMMIT go as one extended-protocol batch under a single Sync (`WithCommit`):
 * one write, and one answer from PostgreSQL, which flushes only at the Sync. If a deferred
 * statement fails, PostgreSQL skips the rest of the batch (the COMMIT too) up to the Sync and the
 * transaction stays open and aborted: the COMMIT's promise rejects with that statement's error and
 * Kysely rolls back. Otherwise (another next statement, or a statement not parsed yet on this
 * connection) node-postgres is switched to its pipeline mode (every query with its own Sync, the
 * answers in order) for exactly those queries, with the socket corked around them so that they
 * leave in one write.
 */

/** At most this many texts can be registered. */
export const DEFERRED_LIMIT = 8

const texts = new Set<string>()

/** One insert of one row: `insert into … values (…)`, without `returning`, `on conflict` or `select`. */
const SINGLE_ROW_INSERT = /^\s*insert\s+into\s[^;]*\bvalues\s*\([^;]*\)\s*$/i
const NOT_SINGLE_ROW = /\b(returning|on\s+conflict|select)\b|\)\s*,\s*\(/i

/**
 * Registers `text` to be deferred inside transactions on PostgreSQL (see above) and returns it
 * unchanged; run it as usual (`db.executeQuery(CompiledQuery.raw(text, values))`).
 * @throws TypeError for anything but an insert of exactly one row, or past DEFERRED_LIMIT texts.
 */
export function deferredStatement(text: string): string {
  if (texts.has(text)) return text
  if (!SINGLE_ROW_INSERT.test(text) || NOT_SINGLE_ROW.test(text))
    throw new TypeError(
      'only an insert of one row (values (…), without returning, on conflict or select) can be deferred',
    )
  if (texts.size >= DEFERRED_LIMIT)
    throw new TypeError(`at most ${DEFERRED_LIMIT} deferred statements can be registered`)
  texts.add(text)
  return text
}

type QueryFn = (...args: unknown[]) => unknown
/** What Kysely sends to end a failed transaction (not `rollback to savepoint`). */
const ROLLBACK = /^\s*rollback\s*;?\s*$/i
/** What Kysely sends to commit. */
const COMMIT = /^\s*commit\s*;?\s*$/i
type Deferred = readonly [text: string, values: unknown[]]

/** The parts of node-postgres' connection a batch writes with (pg/lib/connection.js). */
interface PgConnection {
  stream: { cork?: () => void; uncork?: () => void }
  /** Names of the statements parsed on this connection, with their text. */
  parsedStatements: Record<string, string>
  parse(query: { text: string; name?: string }): void
  bind(config: { statement?: string; values?: unknown[]; valueMapper?: (value: unknown) => unknown }): void
  execute(config: Record<string, never>): void
  sync(): void
}

/** What node-postgres needs to be switched to pipelining for a moment; absent on other clients. */
interface PipelinableClient {
  pipeline: boolean
  getTransactionStatus(): string | null
  connection: PgConnection
}

/** How node-postgres turns a parameter into protocol text (Dates, JSON, arrays), as its own queries do. */
const prepareValue = (pg as unknown as { utils: { prepareValue(v: unknown): unknown } }).utils.prepareValue

/**
 * The deferred statements (by prepared name) and the COMMIT as one extended-protocol batch under a
 * single Sync, run by node-postgres like any query object (client.query(batch)): Bind and Execute
 * for each prepared statement, Parse, Bind and Execute for the COMMIT, one Sync, in one write.
 * PostgreSQL answers once, at the Sync. The first error (a refused insert, after which PostgreSQL
 * skips to the Sync without committing, or the COMMIT's own) is the batch's; otherwise it resolves
 * with the COMMIT's result.
 */
class WithCommit {
  callback: ((err: Error | null, result?: unknown) => void) | undefined
  #completed = 0
  #result: { command: string; rowCount: null; rows: never[]; fields: never[] } | undefined

  readonly statements: readonly { name: string; values: unknown[] }[]
  readonly commit: string

  constructor(statements: readonly { name: string; values: unknown[] }[], commit: string) {
    this.statements = statements
    this.commit = commit
  }

  submit(connection: PgConnection): null {
    connection.stream.cork?.()
    try {
      for (const { name, values } of this.statements) {
        connection.bind({ statement: name, values, valueMapper: prepareValue })
        connection.execute({})
      }
      connection.parse({ text: this.commit })
      connection.bind({})
      connection.execute({})
      connection.sync()
    } finally {
      connection.stream.uncork?.()
    }
    return null
  }

  handleCommandComplete(msg: { text?: string }): void {
    this.#completed++
    if (this.#completed > this.statements.length)
      this.#result = { command: (msg.text ?? '').split(' ')[0]!, rowCount: null, rows: [], fields: [] }
  }

  /** As node-postgres' own queries: an error settles at once (its ReadyForQuery follows). */
  handleError(err: Error): void {
    const callback = this.callback
    this.callback = undefined
    callback?.(err)
  }

  handleReadyForQuery(): void {
    const callback = this.callback
    this.callback = undefined
    callback?.(null, this.#result)
  }

  handleRowDescription(): void {}
  handleDataRow(): void {}
  handleEmptyQuery(): void {}
  handlePortalSuspended(): void {}
  handleCopyInResponse(): void {}
  handleCopyData(): void {}
}

function pipelinable(client: unknown): client is PipelinableClient {
  const c = client as Partial<PipelinableClient>
  return (
    c.pipeline === false &&
    typeof c.getTransactionStatus === 'function' &&
    typeof c.connection?.stream?.cork === 'function' &&
    typeof c.connection.stream.uncork === 'function'
  )
}

/** The result a deferred insert resolves with (what node-postgres gives for one inserted row). */
const inserted = () => ({ command: 'INSERT', rowCount: 1, oid: 0, rows: [], fields: [] })

/**
 * Makes every client of `pool` defer registered inserts inside transactions. Install after the
 * other wrappers of `client.query` (prepared-statements.ts), so that deferred statements go through them.
 */
export function useDeferredStatements(pool: pg.Pool): void {
  const pendingOf = new WeakMap<object, Deferred[]>()
  pool.on('connect', (client) => {
    if (!pipelinable(client)) return
    const c = client as unknown as PipelinableClient
    const query = client.query.bind(client) as QueryFn
    const pending: Deferred[] = []
    pendingOf.set(client, pending)

    /** The deferred statements and the COMMIT under one Sync (see WithCommit). */
    function commitWith(statements: readonly { name: string; values: unknown[] }[], commit: string) {
      // With a callback (not a promise), so that the other wrappers of `query` see how it ended
      // (pool-errors.ts drops a connection whose answer did not come within the query timeout).
      return new Promise<unknown>((resolve, reject) => {
        query(new WithCommit(statements, commit), (err: Error | null, result?: unknown) =>
          err ? reject(err) : resolve(result),
        )
      })
    }

    /** The deferred statements, then the call's own, in one write; the first refusal wins. */
    async function sendWith(deferred: readonly Deferred[], args: unknown[]): Promise<unknown> {
      const [text, values] = args
      if (
        typeof text === 'string' &&
        COMMIT.test(text) &&
        (values === undefined || (Array.isArray(values) && values.length === 0))
      ) {
        const parsed = c.connection.parsedStatements
        const statements = deferred.map(([t, v]) => {
          const name = preparedName(t)
          return name !== undefined && parsed[name] === t ? { name, values: v } : undefined
        })
        if (statements.every((s) => s !== undefined)) return commitWith(statements, text)
      }
      const stream = c.connection.stream
      const sent: Promise<unknown>[] = []
      c.pipeline = true
      try {
        stream.cork!()
        try {
          for (const [text, values] of deferred) sent.push(query(text, values) as Promise<unknown>)
          sent.push(query(...args) as Promise<unknown>)
        } finally {
          stream.uncork!()
        }
        const settled = await Promise.allSettled(sent)
        for (const s of settled) if (s.status === 'rejected') throw s.reason
        return (settled.at(-1) as PromiseFulfilledResult<unknown>).value
      } finally {
        await Promise.allSettled(sent)
        c.pipeline = false
      }
    }

    const deferring: QueryFn = (...args) => {
      const [text, values] = args
      if (
        args.length === 2 &&
        typeof text === 'string' &&
        Array.isArray(values) &&
        texts.has(text) &&
        c.getTransactionStatus() === 'T'
      ) {
        pending.push([text, values])
        return Promise.resolve(inserted())
      }
      if (pending.length === 0) return query(...args)
      const deferred = pending.splice(0)
      // Undone anyway: not worth sending.
      if (typeof text === 'string' && ROLLBACK.test(text)) return query(...args)
      if (typeof text === 'string' && typeof args.at(-1) !== 'function') return sendWith(deferred, args)
      // A callback, a query config or a Query object (a cursor, a stream): sent after the deferred
      // statements in node-postgres' own queue, one round trip each. A refusal of theirs aborts the
      // transaction, so this statement fails too (or, for a COMMIT, it rolls back).
      for (const [t, v] of deferred) (query(t, v) as Promise<unknown>).catch(() => {})
      return query(...args)
    }
    ;(client as unknown as { query: QueryFn }).query = deferring
  })
  // A client handed back with statements still deferred (its transaction never ended through it):
  // they belong to nobody now.
  pool.on('release', (_err: unknown, client: pg.PoolClient) => {
    pendingOf.get(client)?.splice(0)
  })
}
