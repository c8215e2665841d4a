import type { Redis } from 'ioredis'
import type { Logger } from 'pino'
import type { PlinthConfig } from '../../config/config.schema.ts'
import type { RedisHandle } from '../../infra/cache/redis.ts'
import { backoffDelay } from '../../infra/db/retry.ts'

/** One event as a stream sends it (`data:` of an SSE message). */
export interface StreamedEvent {
  readonly id: string
  readonly type: string
  readonly data: unknown
  readonly occurredAt: string
}

/** A subscriber: gets every event that reaches this process, once, in arrival order. */
export type StreamListener = (event: StreamedEvent) => void

/** The Redis stream every replica appends to and reads (under PLINTH_REDIS_PREFIX). */
export const EVENT_STREAM_KEY = 'events:stream'
/** The most a process keeps of recent events' data for resuming clients (besides the count). */
export const HISTORY_MAX_BYTES = 32 * 1024 * 1024
/** How long one XREAD waits for entries: also how long the reader takes to notice `close()`. */
const BLOCK_MS = 2000

export interface EventStreamHub {
  /** Sends a committed event to every stream, on every replica (through Redis when configured). */
  publish(event: StreamedEvent): Promise<void>
  /**
   * Adds a listener. Resolves with the events kept after `lastEventId` (`gap` when that id is no
   * longer, or never was, in the history), once the Redis history is loaded when there is one.
   */
  subscribe(
    listener: StreamListener,
    lastEventId?: string,
  ): Promise<{ replay: StreamedEvent[]; gap: boolean; unsubscribe: () => void }>
  /** Listeners now. */
  readonly listeners: number
  /** 1 while events reach this process through Redis, 0 when it delivers its own only. */
  readonly shared: number
  /** Events this process delivered to its own streams only, because Redis was away. */
  readonly localFallbacks: number
  /** Stops the Redis reader. */
  close(): Promise<void>
}

/**
 * The fan-out of committed events to open event streams. Without Redis, in-process. With Redis,
 * each event is appended to one Redis stream (`XADD … MAXLEN ~ <history>`) and each process runs
 * one reader (`XREAD BLOCK`, on its own connection, started with the first listener) that hands
 * the entries to its listeners: so every replica's streams get every replica's events, in one
 * order. While Redis is away, a process hands its own events to its own listeners (logged once,
 * counted), and its reader resumes from the last entry it read when Redis is back.
 *
 * Each process keeps the last `eventsStreamHistory` events it handed out (seeded from the Redis
 * stream), by event id: a reconnecting client's `Last-Event-ID` replays what it missed, and an
 * event id seen again (a re-emit, or an append that timed out yet landed) is handed out once.
 */
export function createEventStreamHub(deps: {
  config: Pick<PlinthConfig, 'eventsStreamHistory'>
  redis: RedisHandle | undefined
  logger: Logger
}): EventStreamHub {
  const log = deps.logger.child({ component: 'event-stream' })
  const max = deps.config.eventsStreamHistory
  const history: StreamedEvent[] = []
  const seen = new Set<string>()
  const listeners = new Set<StreamListener>()
  let localFallbacks = 0
  let fallingBack = false
  let reader: Redis | undefined
  let readerLoop: Promise<void> | undefined
  let seeded: Promise<void> | undefined
  let markSeeded: (() => void) | undefined
  let readerUp = false
  /** Counts the reader's (re)connections: an append made within one of them is surely read. */
  let readerEpoch = 0
  let closed = false
  /** Ends the reader's wait between attempts (at close). */
  let wake = () => {}

  const sizes: number[] = []
  let bytes = 0
  function remember(event: StreamedEvent): boolean {
    if (seen.has(event.id)) return false
    const size = JSON.stringify(event.data ?? null).length + 200
    history.push(event)
    sizes.push(size)
    bytes += size
    seen.add(event.id)
    // Bounded by count and by size (events may carry up to PLINTH_BODY_LIMIT each); the newest stays.
    while (history.length > max || (bytes > HISTORY_MAX_BYTES && history.length > 1)) {
      seen.delete(history.shift()!.id)
      bytes -= sizes.shift()!
    }
    return true
  }

  function deliver(event: StreamedEvent): void {
    if (!remember(event)) return
    for (const listener of listeners) {
      try {
        listener(event)
      } catch (err) {
        log.error({ err }, 'event stream listener failed')
      }
    }
  }

  function fallBack(reason: string, event: StreamedEvent): void {
    localFallbacks++
    if (!fallingBack) {
      fallingBack = true
      log.warn({ reason }, 'event streams falling back to this process’s own events (redis unavailable)')
    }
    deliver(event)
  }

  function parse(fields: string[]): StreamedEvent | undefined {
    for (let i = 0; i + 1 < fields.length; i += 2) {
      if (fields[i] !== 'e') continue
      try {
        const e = JSON.parse(fields[i + 1]!) as StreamedEvent
        if (typeof e.id === 'string' && typeof e.type === 'string') return e
      } catch {}
    }
    return undefined
  }

  async function readForever(client: Redis): Promise<void> {
    let lastId: string | undefined
    let attempt = 0
    while (!closed) {
      try {
        if (!readerUp) {
          await client.ping()
          if (lastId === undefined) {
            // The newest entries: the whole history when this process has none yet, else only the
            // position to read on from (what this process already handed out stays as it was).
            const newest = (await client.xrevrange(
              EVENT_STREAM_KEY,
              '+',
              '-',
              'COUNT',
              history.length === 0 ? max : 1,
            )) as [string, string[]][]
            if (history.length === 0)
              for (const [, fields] of [...newest].reverse()) {
                const e = parse(fields)
                if (e) remember(e)
              }
            lastId = newest[0]?.[0] ?? '0-0'
            markSeeded?.()
          }
          // Only now: an event appended before the position was known is handed out by its publisher.
          readerUp = true
          readerEpoch++
          attempt = 0
          if (fallingBack) log.info('event streams fan out through redis again')
          fallingBack = false
        }
        const answer = (await client.xread(
          'COUNT',
          500,
          'BLOCK',
          BLOCK_MS,
          'STREAMS',
          EVENT_STREAM_KEY,
          lastId ?? '$', // always set once up
        )) as [string, [string, string[]][]][] | null
        for (const [, entries] of answer ?? []) {
          for (const [entryId, fields] of entries) {
            lastId = entryId
            const e = parse(fields)
            if (e) deliver(e)
          }
        }
      } catch (err) {
        if (closed) return
        if (readerUp) log.warn({ reason: (err as Error).message }, 'event stream reader lost redis')
        readerUp = false
        const delayMs = Math.round(backoffDelay(++attempt, { initialDelayMs: 200, maxDelayMs: 5000 }))
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, delayMs)
          wake = () => {
            clearTimeout(timer)
            resolve()
          }
        })
      }
    }
  }

  function startReader(): Promise<void> {
    if (!deps.redis || closed) return Promise.resolve()
    seeded ??= new Promise<void>((resolve) => {
      markSeeded = resolve
      // A client never waits long for the history: Redis may be away.
      setTimeout(resolve, 1000).unref()
    })
    if (!reader) {
      // Its own connection: XREAD BLOCK holds it. No command timeout shorter than the block.
      reader = deps.redis.client.duplicate({ commandTimeout: BLOCK_MS + 5000 })
      reader.on('error', () => {}) // the loop logs; without a listener ioredis would throw
      reader.connect().catch(() => {}) // it reconnects by itself from then on
      readerLoop = readForever(reader)
    }
    return seeded
  }

  return {
    async publish(event) {
      const redis = deps.redis
      if (!redis || closed) {
        deliver(event)
        return
      }
      if (redis.client.status !== 'ready') {
        fallBack(`redis ${redis.client.status}`, event)
        return
      }
      const epoch = readerUp ? readerEpoch : -1
      try {
        await redis.client.xadd(EVENT_STREAM_KEY, 'MAXLEN', '~', String(max), '*', 'e', JSON.stringify(event))
        // No reader here (a worker, or no stream opened yet): its own listeners need it now. A
        // reader that was not reading since before the append may start after it: handed out here
        // too (and once only, by id).
        if (!reader) deliver(event)
        else if (!readerUp || epoch !== readerEpoch) fallBack('redis reader not connected', event)
      } catch (err) {
        fallBack((err as Error).message, event)
      }
    },
    async subscribe(listener, lastEventId) {
      await startReader()
      listeners.add(listener)
      let replay: StreamedEvent[] = []
      let gap = false
      if (lastEventId !== undefined) {
        const at = history.findIndex((e) => e.id === lastEventId)
        if (at >= 0) replay = history.slice(at + 1)
        else gap = true
      }
      return { replay, gap, unsubscribe: () => listeners.delete(listener) }
    },
    get listeners() {
      return listeners.size
    },
    get shared() {
      return readerUp ? 1 : 0
    },
    get localFallbacks() {
      return localFallbacks
    },
    async close() {
      closed = true
      listeners.clear()
      if (reader) {
        reader.disconnect()
        wake()
        await readerLoop
      }
    },
  }
}
