import type { FastifyInstance, FastifyReply, FastifyRequest, onSendHookHandler, RouteOptions } from 'fastify'
import fp from 'fastify-plugin'
import type { Counter, Histogram } from 'prom-client'
import type { Metrics } from '../../observability/metrics.ts'
import { REQUEST_ID_HEADER } from '../../observability/request-id.ts'

export interface RequestContextOptions {
  readonly metrics: Metrics
  /** Log request bodies at debug level (redacted); refused in production by config. */
  readonly logBodies: boolean
}

/** Route label for requests no route matched: one value, so unknown paths cannot explode cardinality. */
export const UNMATCHED_ROUTE = 'unmatched'

/** Set once a long-lived stream (route config `stream`) has been recorded, when its headers went. */
const STREAM_STARTED = Symbol('plinth.streamStarted')
type Marked = FastifyRequest & { [STREAM_STARTED]?: boolean }

/**
 * Per-request plumbing: echoes the request id, counts in-flight requests, records the RED
 * metrics by route template and writes one `request completed` line per request.
 * The id itself is chosen by `genReqId` in create-server.ts, so every log line carries it.
 */
async function requestContext(app: FastifyInstance, opts: RequestContextOptions): Promise<void> {
  const { metrics } = opts
  // One child per label set, created on first use: prom-client otherwise hashes the labels object
  // on every observation. The set is bounded: route templates × methods × statuses.
  const series = new Map<string, { duration: Histogram.Internal<string>; count: Counter.Internal }>()
  const seriesFor = (method: string, route: string, status: number) => {
    const key = `${method} ${status} ${route}`
    let s = series.get(key)
    if (!s) {
      const labels = { method, route, status_code: String(status) }
      s = { duration: metrics.httpRequestDuration.labels(labels), count: metrics.httpRequests.labels(labels) }
      series.set(key, s)
    }
    return s
  }

  app.decorateRequest(STREAM_STARTED, false)
  // Callback-style hooks: this runs on every request, and async hooks cost a promise each.
  app.addHook('onRequest', (request, reply, done) => {
    // Set first, so that every answer carries it, errors and 404s included.
    reply.header(REQUEST_ID_HEADER, request.id)
    metrics.httpInFlight.inc()
    // 'close' fires for finished and aborted responses alike, so the gauge cannot leak.
    reply.raw.once('close', () => {
      if (!(request as Marked)[STREAM_STARTED]) metrics.httpInFlight.dec()
    })
    done()
  })
  // A stream is answered when its headers go: counted in flight for hours, it would hold the
  // gauge up, and its duration (its whole life) would land past the last latency bucket.
  const streamStarted: onSendHookHandler = (request, reply, payload, done) => {
    if (reply.statusCode < 300 && !(request as Marked)[STREAM_STARTED]) {
      ;(request as Marked)[STREAM_STARTED] = true
      metrics.httpInFlight.dec()
      record(request, reply, true)
    }
    done(null, payload)
  }
  app.addHook('onRoute', (route: RouteOptions) => {
    if (!route.config?.stream) return
    const own = route.onSend === undefined ? [] : Array.isArray(route.onSend) ? route.onSend : [route.onSend]
    route.onSend = [...own, streamStarted]
  })
  if (opts.logBodies) {
    app.addHook('preHandler', (request, _reply, done) => {
      if (request.body !== undefined) request.log.debug({ body: request.body }, 'request body')
      done()
    })
  }
  const record = (request: FastifyRequest, reply: FastifyReply, stream: boolean) => {
    const route = request.routeOptions.url ?? UNMATCHED_ROUTE
    const s = seriesFor(request.method, route, reply.statusCode)
    s.duration.observe(reply.elapsedTime / 1000)
    s.count.inc()
    request.log.info(
      {
        method: request.method,
        route,
        path: request.url.split('?', 1)[0],
        statusCode: reply.statusCode,
        durationMs: Math.round(reply.elapsedTime * 100) / 100,
        ...(stream ? { stream: 'started' } : {}),
      },
      'request completed',
    )
  }
  app.addHook('onResponse', (request, reply, done) => {
    if (!(request as Marked)[STREAM_STARTED]) record(request, reply, false)
    done()
  })
}

export default fp(requestContext, { name: 'plinth-request-context', fastify: '5.x' })
