import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import type { Metrics } from '../../observability/metrics.ts'
import { REQUEST_ID_HEADER } from '../../observability/request-id.ts'
import { routeConfig } from '../route-config.ts'

export interface RequestContextOptions {
  readonly metrics: Metrics
  /** Log request bodies at debug level (redacted); refused in production by config. */
  readonly logBodies: boolean
}

/** The URL without its query string. */
const pathOf = (url: string) => {
  const q = url.indexOf('?')
  return q < 0 ? url : url.slice(0, q)
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
  const answered = () => metrics.httpInFlight.dec()

  // Callback-style hooks: this runs on every request, and async hooks cost a promise each.
  app.addHook('onRequest', (request, reply, done) => {
    // Set first, so that every answer carries it, errors and 404s included.
    reply.header(REQUEST_ID_HEADER, request.id)
    metrics.httpInFlight.inc()
    // 'close' fires once, for finished and aborted responses alike, so the gauge cannot leak.
    // One shared listener: the response object lives for this request only.
    reply.raw.on('close', answered)
    done()
  })
  if (opts.logBodies) {
    app.addHook('preHandler', (request, _reply, done) => {
      if (request.body !== undefined) request.log.debug({ body: request.body }, 'request body')
      done()
    })
  }
  app.addHook('onResponse', (request, reply, done) => {
    const route = routeConfig(request).url ?? UNMATCHED_ROUTE
    const elapsed = reply.elapsedTime
    metrics.httpSeries(request.method, route, reply.statusCode).record(elapsed / 1000)
    request.log.info(
      {
        method: request.method,
        route,
        path: pathOf(request.url),
        statusCode: reply.statusCode,
        durationMs: Math.round(elapsed * 100) / 100,
      },
      'request completed',
    )
    done()
  })
}

export default fp(requestContext, { name: 'plinth-request-context', fastify: '5.x' })
