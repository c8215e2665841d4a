import { randomUUID } from 'node:crypto'
import type { Logger } from 'pino'
import { Counter, Histogram } from 'prom-client'
import { Type } from 'typebox'
import type { PlinthConfig } from '../../config/config.schema.ts'
import { defineJob, type JobContext } from '../../core/jobs.ts'
import type { ModuleContext } from '../../core/module.ts'
import { PLINTH_VERSION } from '../../core/version.ts'
import type { Metrics } from '../../observability/metrics.ts'
import { injectTraceHeaders, SpanKind, SpanStatusCode, withSpan } from '../../observability/tracing.ts'
import { webhookSecretColumn } from './encrypted-columns.ts'
import { type DeliveryPayload, matchesEventType, WEBHOOK_DELIVERY_JOB } from './event-bus.ts'
import { postJson } from './post-json.ts'
import { signatureHeader } from './signature.ts'
import { guardedLookup, hostOf, parseWebhookUrl, type UrlPolicy, UrlRefused } from './url-guard.ts'
import type { DeliveryStatus } from './webhooks.tables.ts'

/**
 * Retries after the first attempt. With the default 10 s first delay, doubling with jitter and
 * capped at 1 h, the last attempt comes about 2.5 to 4 hours after the first; then the job moves
 * to the `plinth.webhook-delivery.dead` queue, from which an operator can redrive it.
 */
export const DELIVERY_RETRY_LIMIT = 10

export const urlPolicy = (config: PlinthConfig): UrlPolicy => ({
  allowPrivate: config.webhooksAllowPrivate,
  allowHttp: config.webhooksAllowHttp,
})

const EventType = Type.String({ pattern: '^[a-z][a-z0-9_.:-]{0,99}$' })

export const DeliveryPayloadSchema = Type.Object(
  {
    subscriptionId: Type.String({ format: 'uuid' }),
    eventId: Type.String({ format: 'uuid' }),
    eventType: EventType,
    data: Type.Unknown(),
    emittedAt: Type.String({ format: 'date-time' }),
  },
  { additionalProperties: false },
)

type Outcome = DeliveryStatus | 'skipped'

function webhookMetrics(metrics: Metrics) {
  const registers = [metrics.registry]
  return {
    deliveries: new Counter({
      name: 'plinth_webhook_deliveries_total',
      help: 'Webhook delivery attempts by outcome: succeeded (2xx), failed (other status, network error, timeout, refused address), skipped (subscription deleted, inactive or no longer matching).',
      labelNames: ['outcome'] as const,
      registers,
    }),
    duration: new Histogram({
      name: 'plinth_webhook_delivery_duration_seconds',
      help: 'Time from sending a webhook to its answer (or failure), by outcome.',
      labelNames: ['outcome'] as const,
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers,
    }),
  }
}

const truncate = (text: string, max = 500) => (text.length > max ? `${text.slice(0, max)}…` : text)
// A receiver's answer is stored as text: no NUL (PostgreSQL refuses it in text) or other control characters.
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is removed
const printable = (text: string) => text.replace(/[\u0000-\u0008\u000b-\u001f\u007f]/g, '').trim()

/** A short, secret-free account of why an attempt failed (stored and logged). */
function failureOf(err: unknown, timeout: AbortSignal, job: AbortSignal, timeoutMs: number): string {
  if (timeout.aborted) return `timed out after ${timeoutMs} ms`
  if (job.aborted) return `aborted: ${String((job.reason as Error)?.message ?? job.reason)}`
  if (err instanceof UrlRefused) return err.message
  const e = err as NodeJS.ErrnoException
  return truncate(
    e?.code && !String(e.message).includes(e.code) ? `${e.code}: ${e.message}` : String(e?.message ?? err),
  )
}

/**
 * The built-in `plinth.webhook-delivery` job: one attempt POSTs one event to one subscription,
 * signed, and records the attempt in `webhook_deliveries`. A non-2xx answer (redirects included),
 * a network error, a timeout or a refused address fails the attempt, which the job engine retries
 * with backoff. A subscription deleted, deactivated or no longer subscribed to the event type
 * meanwhile completes the job without sending.
 */
export function webhookDeliveryJob(ctx: ModuleContext) {
  const { config, keyring } = ctx
  const db = ctx.db.kysely
  const policy = urlPolicy(config)
  const lookup = guardedLookup(policy)
  const m = webhookMetrics(ctx.metrics)
  const userAgent = `Plinth-Webhooks/${PLINTH_VERSION}`

  async function record(
    row: {
      id: string
      subscriptionId: string
      payload: DeliveryPayload
      jobId: string
      attempt: number
      status: DeliveryStatus
      responseStatus: number | null
      error: string | null
      durationMs: number
    },
    log: Logger,
  ): Promise<void> {
    try {
      await db
        .insertInto('webhook_deliveries')
        .values({
          id: row.id,
          subscription_id: row.subscriptionId,
          event_id: row.payload.eventId,
          event_type: row.payload.eventType,
          job_id: row.jobId,
          attempt: row.attempt,
          status: row.status,
          response_status: row.responseStatus,
          error: row.error,
          duration_ms: row.durationMs,
          // Milliseconds, like the cursor of GET /webhooks/{id}/deliveries that pages by it.
          created_at: new Date(),
        })
        .execute()
    } catch (err) {
      // The subscription was deleted while the request was in flight: its deliveries went with it.
      if ((err as { code?: string }).code === '23503') return
      throw err
    }
    const cutoff = new Date(Date.now() - config.webhooksRetention)
    await db
      .deleteFrom('webhook_deliveries')
      .where('id', 'in', (qb) =>
        qb
          .selectFrom('webhook_deliveries')
          .select('id')
          .where('subscription_id', '=', row.subscriptionId)
          .where('created_at', '<', cutoff)
          .limit(500),
      )
      .execute()
      .catch((err: unknown) => log.warn({ err }, 'could not prune old webhook deliveries'))
  }

  async function deliver(job: JobContext<DeliveryPayload>) {
    const payload = job.payload
    const { subscriptionId, eventId, eventType } = payload
    const subscription = await db
      .selectFrom('webhook_subscriptions')
      .select(['url', 'secret', 'active', 'event_types'])
      .where('id', '=', subscriptionId)
      .executeTakeFirst()
    const skipped = !subscription
      ? 'subscription deleted'
      : !subscription.active
        ? 'subscription inactive'
        : !matchesEventType(subscription.event_types, eventType)
          ? 'subscription no longer matches the event type'
          : undefined
    if (skipped || !subscription) {
      m.deliveries.inc({ outcome: 'skipped' satisfies Outcome })
      job.logger.info({ subscriptionId, eventId, reason: skipped }, 'webhook delivery skipped')
      return { skipped }
    }

    const deliveryId = randomUUID()
    const timeout = AbortSignal.timeout(config.webhooksTimeout)
    const started = performance.now()
    let host: string | undefined
    let responseStatus: number | null = null
    let error: string | null = null
    try {
      const url = parseWebhookUrl(subscription.url, policy)
      host = hostOf(url)
      const secret = await keyring.decryptStringAsync(
        subscription.secret,
        webhookSecretColumn.aad(subscriptionId),
      )
      const body = JSON.stringify({
        id: eventId,
        type: eventType,
        data: payload.data,
        createdAt: payload.emittedAt,
      })
      const headers = {
        'content-type': 'application/json',
        'user-agent': userAgent,
        'plinth-delivery': deliveryId,
        'plinth-event': eventId,
        'plinth-signature': signatureHeader(secret, Math.floor(Date.now() / 1000), body),
      }
      // A CLIENT span in the job's trace; the receiver gets its `traceparent` and may continue it.
      const answer = await withSpan(
        `webhook POST ${host}`,
        {
          kind: SpanKind.CLIENT,
          attributes: {
            'http.request.method': 'POST',
            'server.address': host,
            'plinth.webhook.subscription_id': subscriptionId,
            'plinth.webhook.delivery_id': deliveryId,
            'plinth.event.type': eventType,
          },
        },
        async (span) => {
          const result = await postJson(url, body, injectTraceHeaders(headers), {
            signal: AbortSignal.any([job.signal, timeout]),
            lookup,
          })
          span.setAttribute('http.response.status_code', result.status)
          if (result.status < 200 || result.status >= 300) span.setStatus({ code: SpanStatusCode.ERROR })
          return result
        },
      )
      responseStatus = answer.status
      if (answer.status >= 300 && answer.status < 400)
        error = `answered ${answer.status}: redirects are not followed`
      else if (answer.status < 200 || answer.status >= 300)
        error = truncate(
          `answered ${answer.status}${printable(answer.snippet) ? `: ${printable(answer.snippet)}` : ''}`,
        )
    } catch (err) {
      error = failureOf(err, timeout, job.signal, config.webhooksTimeout)
    }
    const durationMs = Math.round(performance.now() - started)
    const status: DeliveryStatus = error === null ? 'succeeded' : 'failed'
    await record(
      {
        id: deliveryId,
        subscriptionId,
        payload,
        jobId: job.id,
        attempt: job.attempt,
        status,
        responseStatus,
        error,
        durationMs,
      },
      job.logger,
    )
    m.deliveries.inc({ outcome: status })
    m.duration.observe({ outcome: status }, durationMs / 1000)
    const facts = { subscriptionId, eventId, eventType, deliveryId, host, responseStatus, durationMs }
    if (error !== null) {
      job.logger.warn({ ...facts, error }, 'webhook delivery failed')
      throw new Error(`webhook delivery ${deliveryId} failed: ${error}`)
    }
    job.logger.info(facts, 'webhook delivered')
    return { deliveryId, responseStatus }
  }

  return defineJob({
    name: WEBHOOK_DELIVERY_JOB,
    description:
      'Posts one event to one webhook subscription, signed (HMAC-SHA256), and records the attempt.',
    payload: DeliveryPayloadSchema,
    policy: {
      concurrency: config.webhooksConcurrency,
      retryLimit: DELIVERY_RETRY_LIMIT,
      retryDelay: Math.max(1, Math.round(config.webhooksRetryDelay / 1000)),
      backoff: true,
      // The attempt's own timeout aborts the request first; this bounds the bookkeeping around it.
      timeout: Math.ceil(config.webhooksTimeout / 1000) + 30,
      deadLetter: true,
    },
    handler: deliver,
  })
}
