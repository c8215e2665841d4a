import { randomUUID } from 'node:crypto'
import { type Kysely, sql } from 'kysely'
import type { Logger } from 'pino'
import type { PlinthConfig } from '../../config/config.schema.ts'
import { type EmitOptions, type EmitResult, EVENT_TYPE, type EventBus } from '../../core/events.ts'
import type { JobEngine } from '../../core/jobs.ts'
import type { Database } from '../../infra/db/create-db.ts'
import type { PlinthTables } from '../../infra/db/tables.ts'
import { PlinthError } from '../../shared/errors.ts'
import type { EventStreamHub, StreamedEvent } from './event-stream.ts'
import './webhooks.tables.ts'

/** The job type that posts one event to one subscription. */
export const WEBHOOK_DELIVERY_JOB = 'plinth.webhook-delivery'

/**
 * What a subscription may list in `eventTypes`: an exact type, `*` (every event), or a prefix
 * ending in `.*` or `:*` (`invoice.*` matches `invoice.paid` and `invoice.line.added`, not `invoice`).
 */
export const EVENT_PATTERN = /^(\*|[a-z][a-z0-9_.:-]{0,99}|[a-z][a-z0-9_.:-]{0,97}[.:]\*)$/

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

/**
 * Every pattern that matches `type`: the type itself, `*`, and one `<prefix>*` per `.` or `:` in
 * it. A subscription matches when its event types share one of these (an array overlap in SQL).
 *
 * @example
 * patternsMatching('invoice.line:added') // ['invoice.line:added', '*', 'invoice.*', 'invoice.line:*']
 */
export function patternsMatching(type: string): string[] {
  const patterns = [type, '*']
  for (let i = 1; i < type.length; i++) {
    if (type[i] === '.' || type[i] === ':') patterns.push(`${type.slice(0, i + 1)}*`)
  }
  return patterns
}

/** True when one of `patterns` (as a subscription lists them) matches the event type. */
export function matchesEventType(patterns: readonly string[], type: string): boolean {
  return patterns.some((p) => p === '*' || p === type || (p.endsWith('*') && type.startsWith(p.slice(0, -1))))
}

/** The payload of one delivery job. */
export interface DeliveryPayload {
  readonly subscriptionId: string
  readonly eventId: string
  readonly eventType: string
  readonly data: unknown
  readonly emittedAt: string
}

/**
 * The event bus (`ctx.events`): an event becomes one `plinth.webhook-delivery` job per active
 * subscription that matches it, queued in one transaction (the caller's, when given) with the
 * idempotency key `<eventId>:<subscriptionId>`, so that emitting the same event id again delivers
 * nothing twice. Without the webhooks module's job type registered, emitting queues nothing.
 */
export function createEventBus(deps: {
  config: PlinthConfig
  db: Database
  jobs: JobEngine
  logger: Logger
  /** Where committed events go to open event streams (none: not streamed). */
  streams?: EventStreamHub | undefined
}): EventBus {
  const log = deps.logger.child({ component: 'events' })
  const streams = deps.streams
  const publish = (event: StreamedEvent) =>
    streams
      ?.publish(event)
      .catch((err: unknown) => log.error({ err, eventId: event.id }, 'event not streamed'))
  let depth = { count: 0, at: 0 }

  /**
   * Backpressure, checked before any transaction is used. Inside it, jobs are enqueued with
   * `overflow: 'accept'`: the engine's own check reads the queue depth on the root handle, which
   * the embedded database (one session, held by the transaction) cannot answer — it would wait
   * forever. For the same reason there is no check at all when a caller's transaction holds the
   * embedded database's connection.
   */
  async function assertRoom(): Promise<void> {
    const max = deps.jobs.definitions().find((d) => d.definition.name === WEBHOOK_DELIVERY_JOB)
      ?.policy.maxQueued
    if (max === undefined) return
    if (Date.now() - depth.at > 1000)
      depth = { count: await deps.jobs.waiting(WEBHOOK_DELIVERY_JOB, max), at: Date.now() }
    if (depth.count >= max)
      throw new PlinthError('PLINTH_JOB_QUEUE_FULL', undefined, {
        headers: { 'retry-after': String(Math.max(1, Math.round(deps.config.jobsMonitorInterval / 1000))) },
      })
  }

  /**
   * The id of the caller's transaction (assigning one if it has none yet); undefined when nothing
   * is streamed or `db` is no transaction (the event is then as committed as it will be).
   */
  async function transactionIdOf(db: Kysely<PlinthTables> | undefined): Promise<string | undefined> {
    if (!streams || !db?.isTransaction) return undefined
    const { rows } = await sql<{ xid: string }>`select pg_current_xact_id()::text as xid`.execute(db)
    return rows[0]!.xid
  }

  /**
   * Publishes `event` once the transaction `xid` is known committed (`pg_xact_status`, asked on
   * the root handle: the caller's transaction cannot answer it, and the embedded database's one
   * connection answers once that transaction ended), never when it rolled back. Polls while it is
   * in progress, less and less often, for at most the shutdown timeout plus a minute.
   */
  function afterCommit(xid: string, event: StreamedEvent): void {
    const deadline = Date.now() + deps.config.shutdownTimeout + 60_000
    void (async () => {
      for (let attempt = 1; ; attempt++) {
        const { rows } = await sql<{
          status: string | null
        }>`select pg_xact_status(${xid}::xid8) as status`.execute(deps.db.kysely)
        const status = rows[0]?.status
        if (status === 'committed') return publish(event)
        if (status !== 'in progress') {
          log.debug({ eventId: event.id, status }, 'event not streamed: its transaction did not commit')
          return
        }
        if (Date.now() > deadline) {
          log.warn({ eventId: event.id }, 'event not streamed: its transaction stayed open too long')
          return
        }
        await new Promise((resolve) => setTimeout(resolve, Math.min(1000, 5 * 2 ** attempt)))
      }
    })().catch((err: unknown) =>
      log.warn({ err, eventId: event.id }, 'event not streamed: its transaction’s outcome is unknown'),
    )
  }

  return {
    async emit(type: string, data: unknown, options: EmitOptions = {}): Promise<EmitResult> {
      if (typeof type !== 'string' || !EVENT_TYPE.test(type))
        throw new PlinthError('PLINTH_EVENT_INVALID', `The event type ${JSON.stringify(type)} is not valid.`)
      if (options.id !== undefined && !UUID.test(options.id))
        throw new PlinthError('PLINTH_EVENT_INVALID', 'The event id must be a UUID.')
      const id = options.id?.toLowerCase() ?? randomUUID()
      const event: StreamedEvent = {
        id,
        type,
        data: data === undefined ? null : data,
        occurredAt: new Date().toISOString(),
      }
      if (!deps.jobs.has(WEBHOOK_DELIVERY_JOB)) {
        const xid = await transactionIdOf(options.db)
        if (xid !== undefined) afterCommit(xid, event)
        else void publish(event)
        return { id, deliveries: 0 }
      }
      if (!deps.jobs.running) throw new PlinthError('PLINTH_JOBS_UNAVAILABLE')
      const emittedAt = event.occurredAt
      const queue = async (trx: Kysely<PlinthTables>): Promise<number> => {
        const subscriptions = await trx
          .selectFrom('webhook_subscriptions')
          .select('id')
          .where('active', '=', true)
          .where(sql<boolean>`event_types && ${patternsMatching(type)}::text[]`)
          .orderBy('created_at')
          .execute()
        let queued = 0
        for (const { id: subscriptionId } of subscriptions) {
          const payload: DeliveryPayload = {
            subscriptionId,
            eventId: id,
            eventType: type,
            data: data === undefined ? null : data,
            emittedAt,
          }
          const result = await deps.jobs.enqueue(WEBHOOK_DELIVERY_JOB, payload, {
            idempotencyKey: `${id}:${subscriptionId}`,
            requestId: options.requestId,
            db: trx,
            overflow: 'accept',
          })
          if (result.created) queued++
        }
        return queued
      }
      if (!(options.db && deps.db.kind === 'embedded')) await assertRoom()
      let xid: string | undefined
      const deliveries = options.db
        ? await queue(options.db).then(async (n) => {
            xid = await transactionIdOf(options.db)
            return n
          })
        : await deps.db.kysely.transaction().execute(queue)
      depth.count += deliveries
      // Streamed once committed: at once for our own transaction, else when the caller's commits.
      if (xid !== undefined) afterCommit(xid, event)
      else void publish(event)
      log.debug({ eventId: id, type, deliveries, requestId: options.requestId }, 'event emitted')
      return { id, deliveries }
    },
  }
}
