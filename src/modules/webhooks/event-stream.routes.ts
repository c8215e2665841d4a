import { PassThrough } from 'node:stream'
import { Type } from 'typebox'
import type { ModuleContext, PlinthApp } from '../../core/module.ts'
import { PlinthError } from '../../shared/errors.ts'
import { EVENT_PATTERN, matchesEventType } from './event-bus.ts'
import type { EventStreamHub, StreamedEvent } from './event-stream.ts'

/** An open stream whose client reads slower than events come is cut above this much unsent output. */
export const STREAM_MAX_BUFFERED_BYTES = 1024 * 1024
/** What a refused stream is told to wait (seconds): about one reconnect of a browser. */
const FULL_RETRY_AFTER_SECONDS = 5

/** The SSE message of one event: its id (what `Last-Event-ID` names), its type, and the event as JSON. */
export function sseMessage(event: StreamedEvent): string {
  return `id: ${event.id}\nevent: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`
}

/** Counters of the stream route, read by the module's metrics. */
export interface StreamStats {
  refused: number
  slowConsumers: number
  revoked: number
}

const StreamQuery = Type.Object({
  types: Type.Optional(
    Type.String({
      maxLength: 2000,
      description:
        'Comma-separated event types or patterns, as a webhook subscription lists them (`invoice.paid`, `invoice.*`, `user:*`, `*`); all events when absent.',
    }),
  ),
})

const StreamHeaders = Type.Object({
  'last-event-id': Type.Optional(
    Type.String({
      maxLength: 200,
      description:
        'The id of the last event received: the events after it that are still kept are sent first.',
    }),
  ),
})

function parsePatterns(types: string | undefined): string[] | undefined {
  if (types === undefined) return undefined
  const patterns = types
    .split(',')
    .map((t) => t.trim())
    .filter((t) => t !== '')
  const bad = patterns.find((p) => !EVENT_PATTERN.test(p))
  if (patterns.length === 0 || bad !== undefined)
    throw new PlinthError(
      'PLINTH_HTTP_VALIDATION_FAILED',
      'types lists event types or patterns (invoice.paid, invoice.*, user:*, *), separated by commas.',
      {
        errors: [
          {
            in: 'querystring',
            field: 'types',
            message:
              bad === undefined ? 'must list at least one pattern' : `${JSON.stringify(bad)} is no pattern`,
          },
        ],
      },
    )
  return patterns
}

/**
 * `GET /events/stream`: every event emitted (and committed) anywhere in the deployment, as
 * server-sent events, for holders of `events:read`. See docs/guides/event-stream.md.
 */
export function eventStreamRoutes(
  api: PlinthApp,
  ctx: ModuleContext,
  hub: EventStreamHub,
  stats: StreamStats,
): void {
  const { config } = ctx
  const log = ctx.logger.child({ component: 'event-stream' })
  /** Every open stream's `end`, so that shutdown ends them. */
  const open = new Set<(reason: string) => void>()

  // Before the server waits for in-flight requests: a stream would otherwise hold the shutdown.
  api.addHook('preClose', (done) => {
    for (const end of [...open]) end('shutdown')
    done()
  })

  api.get(
    '/events/stream',
    {
      config: {
        permission: 'events:read',
        errors: ['PLINTH_EVENTS_STREAM_FULL', 'PLINTH_HTTP_VALIDATION_FAILED'],
        // Recorded when its headers go, then out of the in-flight gauge (http/route-config.ts).
        stream: true,
      },
      schema: {
        tags: ['webhooks'],
        summary:
          'Stream events as they are emitted (server-sent events, text/event-stream); resume with Last-Event-ID',
        querystring: StreamQuery,
        headers: StreamHeaders,
        produces: ['text/event-stream'],
        response: {
          200: Type.String({
            description:
              'An endless text/event-stream: `retry:` first, then per event `id:` (the event id), `event:` (its type) and `data:` (`{"id","type","data","occurredAt"}` as JSON); a `: heartbeat` comment every PLINTH_EVENTS_STREAM_HEARTBEAT. It ends when the session or token is revoked, after PLINTH_EVENTS_STREAM_MAX_AGE and when the server shuts down; reconnect with Last-Event-ID.',
          }),
        },
      },
    },
    async (request, reply) => {
      const patterns = parsePatterns(request.query.types)
      if (open.size >= config.eventsStreamMax) {
        stats.refused++
        throw new PlinthError('PLINTH_EVENTS_STREAM_FULL', undefined, {
          headers: { 'retry-after': String(FULL_RETRY_AFTER_SECONDS) },
        })
      }
      const principal = request.principal!
      const out = new PassThrough()
      let ended = false
      let timer: NodeJS.Timeout | undefined
      let maxAge: NodeJS.Timeout | undefined
      let unsubscribe: (() => void) | undefined
      const end = (reason: string) => {
        if (ended) return
        ended = true
        clearInterval(timer)
        clearTimeout(maxAge)
        unsubscribe?.()
        open.delete(end)
        log.debug({ requestId: request.id, reason }, 'event stream ended')
        out.end()
      }
      open.add(end) // counted at once: concurrent requests cannot pass the cap together
      const write = (chunk: string) => {
        if (ended) return
        out.write(chunk)
        if (out.writableLength > STREAM_MAX_BUFFERED_BYTES) {
          stats.slowConsumers++
          log.warn(
            { requestId: request.id, buffered: out.writableLength },
            'event stream client too slow, ended',
          )
          end('slow consumer')
        }
      }
      const send = (event: StreamedEvent) => {
        if (patterns === undefined || matchesEventType(patterns, event.type)) write(sseMessage(event))
      }
      reply.raw.on('close', () => {
        end('client gone')
        // Not half-open until the server closes: a dropped stream's connection goes with it.
        if (!reply.raw.writableFinished) reply.raw.destroy()
      })
      try {
        const lastEventId = request.headers['last-event-id']
        const subscription = await hub.subscribe(send, lastEventId)
        unsubscribe = subscription.unsubscribe
        if (ended) {
          unsubscribe()
          return reply.send(out as unknown as string) // a stream; the schema describes its text
        }
        write(`retry: ${config.eventsStreamRetry}\n: connected\n\n`)
        if (subscription.gap)
          write(`event: stream.gap\ndata: ${JSON.stringify({ lastEventId: lastEventId ?? null })}\n\n`)
        for (const event of subscription.replay) send(event)
      } catch (err) {
        end('failed')
        throw err
      }
      timer = setInterval(() => {
        write(': heartbeat\n\n')
        ctx.users.principalActive(principal).then(
          (active) => {
            if (active) return
            stats.revoked++
            end('credential revoked')
          },
          // Unknown now (the database is away): the next beat asks again.
          (err: unknown) =>
            log.warn({ err, requestId: request.id }, 'event stream could not check its credential'),
        )
      }, config.eventsStreamHeartbeat)
      timer.unref()
      // Recycled now and then: the client comes back with Last-Event-ID, maybe to a newer replica.
      maxAge = setTimeout(() => end('max age'), config.eventsStreamMaxAge)
      maxAge.unref()
      reply
        .header('content-type', 'text/event-stream; charset=utf-8')
        .header('cache-control', 'no-store, no-transform')
        .header('x-accel-buffering', 'no')
      return reply.send(out as unknown as string) // a stream; the schema describes its text
    },
  )
}
