import type { FastifyInstance } from 'fastify'
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

  // Callback-style hooks: this runs on every request, and async hooks cost a promise each.
  app.addHook('onRequest', (request, reply, done) => {
    // Set first, so that every answer carries it, errors and 404s included.
    reply.header(REQUEST_ID_HEADER, request.id)
    metrics.httpInFlight.inc()
    // 'close' fires for finished and aborted responses alike, so the gauge cannot leak.
    reply.raw.once('close', () => metrics.httpInFlight.dec())
    done()
  })
  if (opts.logBodies) {
    app.addHook('preHandler', (request, _reply, done) => {
      if (request.body !== undefined) request.log.debug({ body: request.body }, 'request body')
      done()
    })
  }
  app.addHook('onResponse', (request, reply, done) => {
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
      },
      'request completed',
    )
    done()
  })
}

export default fp(requestContext, { name: 'plinth-request-context', fastify: '5.x' })
