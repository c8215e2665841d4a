/**
 * How the embedded database's connections share PGlite's one session: a replacement for
 * `@electric-sql/pglite-socket`'s query queue (0.2.17) that hands the session to one connection
 * for a whole **protocol unit** at a time, not for one message.
 *
 * pglite-socket queues every frontend message on its own and runs the queue in arrival order,
 * switching connections between any two messages unless the session is inside an explicit
 * transaction (`BEGIN`). node-postgres sends an extended-protocol query as five separate socket
 * writes (Parse, Bind, Describe, Execute, Sync); the worker thread reads concurrently with the main
 * thread's writes, so with more than one connection another connection's messages can land between
 * them. PostgreSQL then runs them against the one shared unnamed statement and portal: a simple
 * query drops the unnamed portal (`exec_simple_query` → "portal does not exist"), another Parse
 * replaces the statement a pending Bind was meant for, an error puts the session in "skip until
 * Sync" and swallows the other connection's messages. A job's `complete` lost that way leaves
 * the job active until pg-boss expires and retries it: the "job ran twice" of decision 0013 (and
 * the odd 500), which is why the pool was held at one connection.
 *
 * Here a connection owns the session from its first message until the message that ends the unit
 * (Sync, a simple Query, FunctionCall, Terminate, the startup or password message: each answered by
 * ReadyForQuery) — and beyond, as long as the session is inside a transaction block, until the
 * unit that ends it. Other connections' messages wait in the queue, in order. A connection that
 * goes away while it owns the session has its unit closed (a Sync, so that an error state does not
 * swallow the next connection's messages) and its transaction rolled back.
 *
 * Within a unit, the extended-protocol messages whose answers a client does not wait for — Parse,
 * Bind, Describe, Execute, Close — are held back and run together with the message that follows
 * them (a Sync, a Flush…) in one call into PGlite, whose answers are written back in one piece.
 * PostgreSQL itself sends those answers only at a Sync or a Flush (or with an error), so clients
 * see no difference; the worker does one PGlite call and one socket write per query instead of
 * five of each (about half of PGlite's CPU per query, and most of the worker's socket writes:
 * decision 0031).
 *
 * A plain `BEGIN` (or `START TRANSACTION …`) from a connection outside a transaction is answered at
 * once (BEGIN, ReadyForQuery in a transaction) and run in one PGlite call with that connection's
 * next unit (its own answer left out of that call's): the transaction takes the session when its
 * first statement arrives, not one round trip to the main thread earlier. Nothing can tell the difference — no other connection can see the
 * transaction before it has done anything — except `now()`, which is the time of that statement.
 * A connection that goes away (or ends) before sending anything else never takes the session.
 * Such a BEGIN is answered on arrival even while another connection's transaction owns the session
 * (when nothing else of its connection is queued, so answers keep their order): the connection's
 * first statement is then already queued when that transaction ends and takes the session at once,
 * instead of the session idling for a round trip to the client between two transactions
 * (decision 0040). The BEGIN still runs only when that statement does, after the other transaction
 * ended — as on PostgreSQL, a snapshot is taken at the first statement, not at BEGIN.
 *
 * Statements: node-postgres sends every parameterised query as a Parse of the unnamed statement,
 * so PostgreSQL parsed, analysed and planned the same few queries on every run (most of its CPU for
 * a short write: decision 0036). A unit that starts with an unnamed Parse and a Bind of it is
 * rewritten to a named statement (`plinth_s<n>`): prepared the first time, then bound without a
 * Parse, the queue adding the ParseComplete the client expects. The cache is emptied (and its
 * statements closed once the session is free) after any command that is not plain data access —
 * DDL, `SET`, `DISCARD`, `DEALLOCATE`, any ROLLBACK — or an error saying a statement went stale;
 * PGlite has one session, so every schema change passes through here.
 *
 * Connections come from embedded-socket.ts (`push`, `run`, `disconnect`); `stats()` counts the
 * PGlite calls, the statement cache's hits, and how long an open transaction left the session idle.
 */
import type { PGlite } from '@electric-sql/pglite'

/** One client connection, as the session queue sees it (embedded-socket.ts makes them). */
export interface Connection {
  readonly id: number
  /** Writes backend messages to the client. */
  write(data: Uint8Array): void
  /** PGlite failed on this connection's message: the connection is closed. */
  fail(err: Error): void
}

interface Item {
  readonly conn: Connection
  readonly message: Uint8Array
}

/** What the queue has done since it started: for benchmarks (bench/http/embedded-tx.ts) and diagnosis. */
export interface SessionQueueStats {
  /** PGlite calls (one per protocol unit, plus the odd Sync or ROLLBACK of a connection that left). */
  readonly calls: number
  /** Transactions run (a BEGIN answered at once and run before the connection's next message). */
  readonly transactions: number
  /**
   * Time the session sat owned by a connection inside a transaction with nothing of that
   * connection's to run (waiting for the client's next statement), in ms, summed; and how often.
   */
  readonly idleInTransactionMs: number
  readonly idleInTransactionWaits: number
  /** Of those waits, the time while other connections' messages were queued behind it (ms). */
  readonly blockingMs: number
  /** Unnamed Parses answered from the statement cache; statements it prepared; times it was emptied. */
  readonly statementHits: number
  readonly statementsPrepared: number
  readonly statementInvalidations: number
  /**
   * Time the session sat free, with nothing to run, while some connection's BEGIN had been answered
   * and its first statement not yet arrived (ms, summed): the idle stretch between transactions.
   */
  readonly freeWithBegunMs: number
  /** BEGINs answered at once while another connection owned the session (push()). */
  readonly beginsWhileOwned: number
}

/** Frontend messages answered by ReadyForQuery: they end a protocol unit. */
const UNIT_END = new Set([
  0x51, // Q  simple query
  0x53, // S  Sync
  0x46, // F  FunctionCall
  0x58, // X  Terminate
  0x70, // p  password (authentication)
])
/**
 * Extended-protocol messages whose answers wait for the next Sync or Flush: held back and run with
 * the message that follows them.
 */
const DEFERRED = new Set([
  0x50, // P  Parse
  0x42, // B  Bind
  0x44, // D  Describe
  0x45, // E  Execute
  0x43, // C  Close
])
/** A simple query that only opens a transaction: `BEGIN` or `START TRANSACTION` and its options. */
const OPENS_TRANSACTION =
  /^\s*(begin|start\s+transaction)(\s+(isolation\s+level\s+[a-z ]+?|read\s+(only|write)|(not\s+)?deferrable|work|transaction|,))*\s*;?\s*$/i
const latin1 = new TextDecoder('latin1')

/** The text of a simple Query message, or undefined for another message. */
function simpleQueryText(message: Uint8Array): string | undefined {
  if (message[0] !== 0x51 || message.length < 6) return undefined
  return latin1.decode(message.subarray(5, message.length - 1))
}

/** CommandComplete with `tag`, then ReadyForQuery "in a transaction block". */
function beginAnswer(tag: string): Uint8Array {
  const text = new TextEncoder().encode(`${tag}\0`)
  const out = new Uint8Array(1 + 4 + text.length + 6)
  const view = new DataView(out.buffer)
  out[0] = 0x43 // C
  view.setInt32(1, 4 + text.length)
  out.set(text, 5)
  const z = 5 + text.length
  out[z] = 0x5a // Z
  view.setInt32(z + 1, 5)
  out[z + 5] = 0x54 // T
  return out
}
const BEGIN_ANSWER = beginAnswer('BEGIN')
const START_ANSWER = beginAnswer('START TRANSACTION')

/** A Sync message: closes an extended-protocol unit left open by a connection that went away. */
const SYNC = new Uint8Array([0x53, 0, 0, 0, 4])

/** True when `message` ends a unit; the startup message (no type byte: its length starts with 0) does too. */
export function endsUnit(message: Uint8Array): boolean {
  const type = message[0]
  return type === 0 || (type !== undefined && UNIT_END.has(type))
}

/** True when `bytes` starts with `prefix`. */
function startsWith(bytes: Uint8Array, prefix: Uint8Array): boolean {
  if (bytes.length < prefix.length) return false
  for (let i = 0; i < prefix.length; i++) if (bytes[i] !== prefix[i]) return false
  return true
}

const PARSE_COMPLETE = new Uint8Array([0x31, 0, 0, 0, 4])
/** The most statements the cache prepares (past it, unnamed Parses run as sent). */
export const MAX_CACHED_STATEMENTS = 500
/**
 * Commands after which a cached statement still means what it meant: anything else (DDL, `DO`,
 * `SET`, `DISCARD`, `DEALLOCATE`, a `ROLLBACK` that may undo DDL…) empties the cache.
 */
const KEEPS_STATEMENTS = new Set([
  'SELECT',
  'INSERT',
  'UPDATE',
  'DELETE',
  'MERGE',
  'BEGIN',
  'START',
  'COMMIT',
  'SAVEPOINT',
  'RELEASE',
  'SHOW',
  'FETCH',
  'MOVE',
  'COPY',
  'LISTEN',
  'UNLISTEN',
  'NOTIFY',
  'LOCK',
  'DECLARE',
  'CLOSE',
  'EXPLAIN',
  'VACUUM',
  'ANALYZE',
])
/** SQLSTATEs that say a cached statement went stale: 0A000 (cached plan must not change result type), 26000 (no such statement). */
const STALE_STATEMENT = new Set(['0A000', '26000'])

/** A Parse of the named statement `name` with the body (query, parameter types) of an unnamed one. */
function namedParse(unnamed: Uint8Array, name: Uint8Array): Uint8Array {
  // 'P', length, name\0 (empty: one 0 byte at 5), then the rest from byte 6; `name` ends in its 0.
  const out = new Uint8Array(unnamed.length - 1 + name.length)
  out[0] = 0x50
  new DataView(out.buffer).setInt32(1, out.length - 1)
  out.set(name, 5)
  out.set(unnamed.subarray(6), 5 + name.length)
  return out
}

/** A Bind of the unnamed portal to the named statement `name` (the Bind was of the unnamed statement). */
function namedBind(unnamed: Uint8Array, name: Uint8Array): Uint8Array {
  // 'B', length, portal\0 (empty, byte 5), statement\0 (empty, byte 6), then the rest.
  const out = new Uint8Array(unnamed.length - 1 + name.length)
  out[0] = 0x42
  new DataView(out.buffer).setInt32(1, out.length - 1)
  out[5] = 0
  out.set(name, 6)
  out.set(unnamed.subarray(7), 6 + name.length)
  return out
}

/**
 * True when the backend messages in `output` say the cached statements may no longer hold: a
 * command that is not plain data access completed, or an error says a statement went stale.
 */
function invalidates(output: Uint8Array): boolean {
  const view = new DataView(output.buffer, output.byteOffset, output.byteLength)
  for (let at = 0; at + 5 <= output.length; at += 1 + view.getInt32(at + 1)) {
    const type = output[at]
    if (type === 0x43) {
      // CommandComplete: its tag's first word.
      let end = at + 5
      while (end < output.length && output[end] !== 0x20 && output[end] !== 0) end++
      if (!KEEPS_STATEMENTS.has(latin1.decode(output.subarray(at + 5, end)))) return true
    } else if (type === 0x45) {
      // ErrorResponse: fields (type byte, text\0), the code is field 'C'.
      const end = at + 1 + view.getInt32(at + 1)
      for (let f = at + 5; f < end && output[f] !== 0; ) {
        let z = f + 1
        while (z < end && output[z] !== 0) z++
        if (output[f] === 0x43 && STALE_STATEMENT.has(latin1.decode(output.subarray(f + 1, z)))) return true
        f = z + 1
      }
    }
  }
  return false
}

type Session = Pick<PGlite, 'runExclusive' | 'execProtocolRawStream' | 'isInTransaction' | 'exec'>

export class SessionQueue {
  private queue: Item[] = []
  private processing = false
  /** The connection that owns the session (mid-unit or inside a transaction), or null. */
  private owner: number | null = null
  /** True while the owner's current unit is open (its last message did not end it). */
  private unitOpen = false
  /** The owner's held-back messages (DEFERRED), run with its next other message. */
  private held: Uint8Array[] = []
  /** Connections whose BEGIN was answered but not yet run: the BEGIN and the answer it was given. */
  private begun = new Map<number, { message: Uint8Array; answer: Uint8Array }>()
  /**
   * Unnamed statements prepared once as named ones (see "Statements" above): the Parse body (query
   * and parameter types, latin1) → the name's bytes (`plinth_s<n>\0`).
   */
  private statements = new Map<string, Uint8Array>()
  /** Names of statements dropped from the cache, closed when the session is next free. */
  private stale: Uint8Array[] = []
  private statementCount = 0
  /** When the owner's last unit inside a transaction was answered (performance.now()), or null. */
  private idleSince: number | null = null
  /** When the session was left free while a BEGIN answered early waited for its first statement, or null. */
  private freeSince: number | null = null
  private stat = {
    calls: 0,
    transactions: 0,
    idleInTransactionMs: 0,
    idleInTransactionWaits: 0,
    blockingMs: 0,
    statementHits: 0,
    statementsPrepared: 0,
    statementInvalidations: 0,
    freeWithBegunMs: 0,
    beginsWhileOwned: 0,
  }

  private readonly db: Session

  constructor(db: Session) {
    this.db = db
  }

  /**
   * Queues a frontend message of `conn`; run() (or the next push's run) processes it. A BEGIN from a
   * connection with nothing else queued and outside the session (another connection may own it) is
   * answered here at once, not when it reaches the head of the queue (see "A plain BEGIN" above): its
   * first statement then waits in the queue while another transaction runs, and takes the session
   * the moment that transaction ends, instead of the session idling for a round trip to the client.
   */
  push(conn: Connection, message: Uint8Array): void {
    if (message[0] === 0x51 && this.owner !== conn.id && !this.begun.has(conn.id) && !this.queued(conn.id)) {
      const text = simpleQueryText(message)
      if (text !== undefined && OPENS_TRANSACTION.test(text)) {
        const answer = /^\s*start/i.test(text) ? START_ANSWER : BEGIN_ANSWER
        this.begun.set(conn.id, { message, answer })
        if (this.owner !== null) this.stat.beginsWhileOwned++
        conn.write(answer)
        return
      }
    }
    this.queue.push({ conn, message })
  }

  /** True when a message of connection `id` waits in the queue. */
  private queued(id: number): boolean {
    for (const item of this.queue) if (item.conn.id === id) return true
    return false
  }

  /** Processes what is queued (a no-op while already processing: the running loop picks it up). */
  run(): void {
    void this.process()
  }

  getQueueLength(): number {
    return this.queue.length
  }

  stats(): SessionQueueStats {
    return { ...this.stat }
  }

  /** The connection is gone: forget its queued messages; if it owned the session, close its unit and transaction. */
  async disconnect(id: number): Promise<void> {
    this.begun.delete(id)
    this.queue = this.queue.filter((item) => item.conn.id !== id)
    if (this.owner !== id) return
    this.held = []
    this.idleSince = null
    if (this.unitOpen) {
      this.stat.calls++
      await this.db.runExclusive(() =>
        this.db.execProtocolRawStream(SYNC, { onRawData: () => {}, syncToFs: false }),
      )
    }
    // Not inside runExclusive: exec takes PGlite's own locks (nesting them deadlocks).
    if (this.db.isInTransaction()) {
      this.stat.calls++
      await this.db.exec('ROLLBACK')
    }
    this.owner = null
    this.unitOpen = false
    await this.process()
  }

  /**
   * When `held` starts with a Parse of the unnamed statement and a Bind of it (node-postgres'
   * parameterised query), rewrites them in place to use a named statement: the cached one (the
   * Parse is dropped; its ParseComplete is added to the answer: `hit`), or a new one (`hit` false;
   * cached once PGlite answered its Parse). Undefined when nothing was rewritten.
   */
  private useStatement(held: Uint8Array[]): { key: string; name: Uint8Array; hit: boolean } | undefined {
    const parse = held[0]!
    const bind = held[1]!
    if (parse[0] !== 0x50 || parse[5] !== 0 || bind[0] !== 0x42 || bind[5] !== 0 || bind[6] !== 0)
      return undefined
    // A Describe or Close of the unnamed statement in the unit: leave the unit as it is.
    for (let i = 2; i < held.length; i++) {
      const m = held[i]!
      if ((m[0] === 0x44 || m[0] === 0x43) && m[5] === 0x53) return undefined
    }
    const key = latin1.decode(parse.subarray(6))
    const cached = this.statements.get(key)
    if (cached) {
      held.splice(0, 2, namedBind(bind, cached))
      this.stat.statementHits++
      return { key, name: cached, hit: true }
    }
    if (this.statements.size >= MAX_CACHED_STATEMENTS) return undefined
    const name = new TextEncoder().encode(`plinth_s${++this.statementCount}\0`)
    held.splice(0, 2, namedParse(parse, name), namedBind(bind, name))
    return { key, name, hit: false }
  }

  /** Empties the statement cache (its statements are closed when the session is next free). */
  private invalidate(): void {
    if (this.statements.size === 0) return
    this.stat.statementInvalidations++
    for (const name of this.statements.values()) this.stale.push(name)
    this.statements.clear()
  }

  /** Closes the statements dropped from the cache: one PGlite call, outside any transaction. */
  private async closeStale(): Promise<void> {
    const names = this.stale
    this.stale = []
    const parts: Uint8Array[] = []
    for (const name of names) {
      const close = new Uint8Array(6 + name.length)
      close[0] = 0x43 // C
      new DataView(close.buffer).setInt32(1, close.length - 1)
      close[5] = 0x53 // S: a statement
      close.set(name, 6)
      parts.push(close)
    }
    parts.push(SYNC)
    this.stat.calls++
    await this.db.runExclusive(() =>
      this.db.execProtocolRawStream(concat(parts), { onRawData: () => {}, syncToFs: false }),
    )
  }

  private next(): Item | undefined {
    if (this.owner === null) return this.queue.shift()
    const index = this.queue.findIndex((item) => item.conn.id === this.owner)
    if (index < 0) return undefined
    return index === 0 ? this.queue.shift() : this.queue.splice(index, 1)[0]
  }

  private async process(): Promise<void> {
    if (this.processing) return
    this.processing = true
    try {
      for (;;) {
        // Before taking the next item: while it waits here it still counts as queued (push()).
        if (this.stale.length > 0 && this.owner === null && !this.db.isInTransaction())
          await this.closeStale()
        const item = this.next()
        if (!item) {
          if (this.owner === null && this.begun.size > 0) this.freeSince = performance.now()
          break
        }
        if (this.freeSince !== null) {
          this.stat.freeWithBegunMs += performance.now() - this.freeSince
          this.freeSince = null
        }
        const { conn, message } = item
        const id = conn.id
        if (this.idleSince !== null) {
          // The owner's next statement arrived: the session waited for it since its last answer.
          const waited = performance.now() - this.idleSince
          this.stat.idleInTransactionMs += waited
          this.stat.idleInTransactionWaits++
          if (this.queue.length > 0) this.stat.blockingMs += waited
          this.idleSince = null
        }
        if (this.owner === null && !this.begun.has(id)) {
          // A BEGIN queued behind this connection's earlier messages (push() answers the others).
          const text = simpleQueryText(message)
          if (text !== undefined && OPENS_TRANSACTION.test(text) && !this.db.isInTransaction()) {
            // Answered now, run with this connection's next message (see above).
            const answer = /^\s*start/i.test(text) ? START_ANSWER : BEGIN_ANSWER
            this.begun.set(id, { message, answer })
            conn.write(answer)
            continue
          }
        }
        this.owner = id
        if (DEFERRED.has(message[0] ?? 0)) {
          // Answered with the next message; the unit stays open (and the session this connection's).
          this.held.push(message)
          this.unitOpen = true
          continue
        }
        const begin = this.begun.get(id)
        if (begin) this.begun.delete(id)
        // Terminate: the connection ends; a BEGIN it never used is not run.
        if (begin && message[0] === 0x58) {
          this.owner = null
          continue
        }
        // The held BEGIN, the held messages and this one: one PGlite call.
        const prepared = this.held.length >= 2 ? this.useStatement(this.held) : undefined
        const parts = begin
          ? [begin.message, ...this.held, message]
          : this.held.length > 0
            ? [...this.held, message]
            : null
        const input = parts ? concat(parts) : message
        this.held = []
        if (begin) this.stat.transactions++
        const output: Uint8Array[] = []
        let failed: Error | undefined
        this.stat.calls++
        try {
          // syncToFs: false — the cluster is in memory or on NodeFS (a directory), whose syncToFs
          // does nothing (PGlite's fs/base.ts); skipping it saves an async mutex round per call.
          await this.db.runExclusive(() =>
            this.db.execProtocolRawStream(input, {
              onRawData: (data) => output.push(data.slice()),
              syncToFs: false,
            }),
          )
        } catch (err) {
          failed = err as Error
        }
        this.unitOpen = failed === undefined && !endsUnit(message)
        if (!this.unitOpen && !this.db.isInTransaction()) this.owner = null
        if (failed) {
          conn.fail(failed)
          continue
        }
        if (this.owner !== null && !this.unitOpen) this.idleSince = performance.now()
        let answer = output.length === 1 ? output[0]! : concat(output)
        // The BEGIN was answered already: its own answer (the same bytes) is not sent twice.
        if (begin && startsWith(answer, begin.answer)) answer = answer.subarray(begin.answer.length)
        if (prepared?.hit) answer = concat([PARSE_COMPLETE, answer])
        else if (prepared && answer[0] === 0x31) {
          // Prepared (ParseComplete came first): later Parses of the same text use it.
          this.statements.set(prepared.key, prepared.name)
          this.stat.statementsPrepared++
        } else if (prepared) this.stale.push(prepared.name)
        if (invalidates(answer)) this.invalidate()
        if (answer.length > 0) conn.write(answer)
      }
    } finally {
      this.processing = false
    }
  }
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  let length = 0
  for (const p of parts) length += p.length
  const out = new Uint8Array(length)
  let offset = 0
  for (const p of parts) {
    out.set(p, offset)
    offset += p.length
  }
  return out
}
