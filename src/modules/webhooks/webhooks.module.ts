import { Counter } from 'prom-client'
import type { EventBus } from '../../core/events.ts'
import type { PlinthModule } from '../../core/module.ts'
import './webhooks.tables.ts'
import { webhookDeliveryJob } from './delivery.ts'
import { webhookSecretColumn } from './encrypted-columns.ts'
import { createEventBus } from './event-bus.ts'
import { eventStreamRoutes, type StreamStats } from './event-stream.routes.ts'
import { createEventStreamHub, type EventStreamHub } from './event-stream.ts'
import createWebhooks from './migrations/0005-create-webhooks.ts'
import { webhooksPersonalData } from './webhooks.privacy.ts'
import { webhooksRetention } from './webhooks.retention.ts'
import { webhooksRoutes } from './webhooks.routes.ts'

/** The stream hub (and the stream route's counters) behind each event bus this module built. */
const streamsOf = new WeakMap<EventBus, { hub: EventStreamHub; stats: StreamStats }>()

/** A counter read from a running total at scrape time. */
function totalCounter(
  ctx: Parameters<NonNullable<PlinthModule['metrics']>>[0],
  name: string,
  help: string,
  read: () => number,
) {
  let reported = 0
  new Counter({
    name,
    help,
    registers: [ctx.metrics.registry],
    collect() {
      const now = read()
      this.inc(now - reported)
      reported = now
    },
  })
}

/**
 * Outbound webhooks: subscriptions (`/api/v1/webhooks`), the `plinth.webhook-delivery` job that
 * posts each event signed and records every attempt, `POST /api/v1/events`, and the live stream of
 * committed events (`GET /api/v1/events/stream`, fanned out through Redis when configured). It
 * provides the event bus (`ctx.events`), through which any module emits.
 */
export const webhooksModule: PlinthModule = {
  name: 'webhooks',
  migrations: { '0005-create-webhooks': createWebhooks },
  personalData: webhooksPersonalData,
  jobs: (ctx) => [webhookDeliveryJob(ctx)],
  routes(api, ctx) {
    webhooksRoutes(api, ctx)
    const streams = streamsOf.get(ctx.events)
    if (streams) eventStreamRoutes(api, ctx, streams.hub, streams.stats)
  },
  metrics(ctx) {
    const streams = streamsOf.get(ctx.events)
    if (!streams) return
    const { hub, stats } = streams
    ctx.metrics.gauge(
      'plinth_event_streams_open',
      'Event streams (GET /api/v1/events/stream) open in this process.',
      () => hub.listeners,
    )
    ctx.metrics.gauge(
      'plinth_event_stream_redis_connected',
      '1 while this process reads the shared event stream in Redis (0 without Redis, or while it is away: streams then get this process’s own events only).',
      () => hub.shared,
    )
    totalCounter(
      ctx,
      'plinth_event_stream_local_fallbacks_total',
      'Events handed to this process’s own streams only, because Redis was away.',
      () => hub.localFallbacks,
    )
    totalCounter(
      ctx,
      'plinth_event_stream_refused_total',
      'Event streams refused with 503 PLINTH_EVENTS_STREAM_FULL (PLINTH_EVENTS_STREAM_MAX reached).',
      () => stats.refused,
    )
    totalCounter(
      ctx,
      'plinth_event_stream_slow_consumers_total',
      'Event streams ended because their client read too slowly (over 1 MiB unsent).',
      () => stats.slowConsumers,
    )
    totalCounter(
      ctx,
      'plinth_event_stream_revoked_total',
      'Event streams ended because their session or API token was revoked.',
      () => stats.revoked,
    )
  },
  encryptedColumns: [webhookSecretColumn],
  retention: (ctx) => webhooksRetention(ctx.config),
  provides: {
    events: (ctx) => {
      const hub = createEventStreamHub({ config: ctx.config, redis: ctx.redis, logger: ctx.logger })
      const value = createEventBus({
        config: ctx.config,
        db: ctx.db,
        jobs: ctx.jobs,
        logger: ctx.logger,
        streams: hub,
      })
      streamsOf.set(value, { hub, stats: { refused: 0, slowConsumers: 0, revoked: 0 } })
      return { value, close: () => hub.close() }
    },
  },
}
