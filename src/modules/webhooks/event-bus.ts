import { randomUUID } from 'node:crypto'
import { type Kysely, sql } from 'kysely'
import type { Logger } from 'pino'
import type { PlinthConfig } from '../../config/config.schema.ts'
import { type EmitOptions, type EmitResult, EVENT_TYPE, type EventBus } from '../../core/events.ts'
import type { JobEngine } from '../../core/jobs.ts'
import type { Database } from '../../infra/db/create-db.ts'
import type { PlinthTables } from '../../infra/db/tables.ts'
import { PlinthError } from '../../shared/errors.ts'
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
}): EventBus {
  const log = deps.logger.child({ component: 'events' })
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

  return {
    async emit(type: string, data: unknown, options: EmitOptions = {}): Promise<EmitResult> {
      if (typeof type !== 'string' || !EVENT_TYPE.test(type))
        throw new PlinthError('PLINTH_EVENT_INVALID', `The event type ${JSON.stringify(type)} is not valid.`)
      if (options.id !== undefined && !UUID.test(options.id))
        throw new PlinthError('PLINTH_EVENT_INVALID', 'The event id must be a UUID.')
      const id = options.id?.toLowerCase() ?? randomUUID()
      if (!deps.jobs.has(WEBHOOK_DELIVERY_JOB)) return { id, deliveries: 0 }
      if (!deps.jobs.running) throw new PlinthError('PLINTH_JOBS_UNAVAILABLE')
      const emittedAt = new Date().toISOString()
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
      const deliveries = options.db
        ? await queue(options.db)
        : await deps.db.kysely.transaction().execute(queue)
      depth.count += deliveries
      log.debug({ eventId: id, type, deliveries, requestId: options.requestId }, 'event emitted')
      return { id, deliveries }
    },
  }
}
