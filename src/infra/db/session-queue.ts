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
 * once (BEGIN, ReadyForQuery in a transaction) and run just before that connection's next message:
 * the transaction takes the session when its first statement arrives, not one round trip to the
 * main thread earlier. Nothing can tell the difference — no other connection can see the
 * transaction before it has done anything — except `now()`, which is the time of that statement.
 * A connection that goes away (or ends) before sending anything else never takes the session.
 *
 * The interface is the one pglite-socket's handlers call (`enqueue`, `clearQueueForHandler`,
 * `clearTransactionIfNeeded`, `getQueueLength`); the worker installs it on the server before it
 * accepts a connection.
 */
import type { PGlite } from '@electric-sql/pglite'

interface Item {
  readonly handlerId: number
  readonly message: Uint8Array
  readonly onData: (data: Uint8Array) => void
  readonly resolve: (bytes: number) => void
  readonly reject: (err: Error) => void
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

/** A Sync message: closes an extended-protocol unit left open by a connection that went away. */
const SYNC = new Uint8Array([0x53, 0, 0, 0, 4])

/** True when `message` ends a unit; the startup message (no type byte: its length starts with 0) does too. */
export function endsUnit(message: Uint8Array): boolean {
  const type = message[0]
  return type === 0 || (type !== undefined && UNIT_END.has(type))
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
  /** Connections whose BEGIN was answered but not yet run (it runs before their next message). */
  private begun = new Map<number, Uint8Array>()

  private readonly db: Session

  constructor(db: Session) {
    this.db = db
  }

  enqueue(handlerId: number, message: Uint8Array, onData: (data: Uint8Array) => void): Promise<number> {
    return new Promise((resolve, reject) => {
      this.queue.push({ handlerId, message, onData, resolve, reject })
      void this.process()
    })
  }

  getQueueLength(): number {
    return this.queue.length
  }

  clearQueueForHandler(handlerId: number): void {
    this.begun.delete(handlerId)
    if (this.owner === handlerId) this.held = []
    this.queue = this.queue.filter((item) => {
      if (item.handlerId !== handlerId) return true
      item.reject(new Error('Handler disconnected'))
      return false
    })
  }

  /** The connection is gone: if it owned the session, close its unit and transaction, free the session. */
  async clearTransactionIfNeeded(handlerId: number): Promise<void> {
    this.begun.delete(handlerId)
    if (this.owner !== handlerId) return
    this.held = []
    if (this.unitOpen) {
      await this.db.runExclusive(() => this.db.execProtocolRawStream(SYNC, { onRawData: () => {} }))
    }
    // Not inside runExclusive: exec takes PGlite's own locks (nesting them deadlocks).
    if (this.db.isInTransaction()) await this.db.exec('ROLLBACK')
    this.owner = null
    this.unitOpen = false
    await this.process()
  }

  private next(): Item | undefined {
    if (this.owner === null) return this.queue.shift()
    const index = this.queue.findIndex((item) => item.handlerId === this.owner)
    return index < 0 ? undefined : this.queue.splice(index, 1)[0]
  }

  private async process(): Promise<void> {
    if (this.processing) return
    this.processing = true
    try {
      for (let item = this.next(); item; item = this.next()) {
        const current = item
        if (this.owner === null && !this.begun.has(current.handlerId)) {
          const text = simpleQueryText(current.message)
          if (text !== undefined && OPENS_TRANSACTION.test(text) && !this.db.isInTransaction()) {
            // Answered now, run before this connection's next message (see above).
            this.begun.set(current.handlerId, current.message)
            const answer = beginAnswer(/^\s*start/i.test(text) ? 'START TRANSACTION' : 'BEGIN')
            current.onData(answer)
            current.resolve(answer.length)
            continue
          }
        }
        const begin = this.begun.get(current.handlerId)
        if (begin) {
          this.begun.delete(current.handlerId)
          // Terminate: the connection ends without having used its transaction.
          if (current.message[0] !== 0x58) {
            try {
              await this.db.runExclusive(() => this.db.execProtocolRawStream(begin, { onRawData: () => {} }))
            } catch (err) {
              current.reject(err as Error)
              continue
            }
          }
        }
        this.owner = current.handlerId
        if (DEFERRED.has(current.message[0] ?? 0)) {
          // Answered with the next message; the unit stays open (and the session this connection's).
          this.held.push(current.message)
          this.unitOpen = true
          current.resolve(0)
          continue
        }
        const input = this.held.length === 0 ? current.message : concat([...this.held, current.message])
        this.held = []
        const output: Uint8Array[] = []
        try {
          await this.db.runExclusive(() =>
            this.db.execProtocolRawStream(input, { onRawData: (data) => output.push(data.slice()) }),
          )
        } catch (err) {
          current.reject(err as Error)
          continue
        } finally {
          this.unitOpen = !endsUnit(current.message)
          if (!this.unitOpen && !this.db.isInTransaction()) this.owner = null
        }
        const answer = output.length === 1 ? output[0]! : concat(output)
        if (answer.length > 0) current.onData(answer)
        current.resolve(answer.length)
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
