import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { redactDeep } from '../../observability/logger.ts'
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
  app.addHook('onRequest', async (_request, reply) => {
    metrics.httpInFlight.inc()
    // 'close' fires for finished and aborted responses alike, so the gauge cannot leak.
    reply.raw.once('close', () => metrics.httpInFlight.dec())
  })
  app.addHook('onSend', async (request, reply) => {
    reply.header(REQUEST_ID_HEADER, request.id)
  })
  if (opts.logBodies) {
    app.addHook('preHandler', async (request) => {
      if (request.body !== undefined) request.log.debug({ body: redactDeep(request.body) }, 'request body')
    })
  }
  app.addHook('onResponse', async (request, reply) => {
    const route = request.routeOptions.url ?? UNMATCHED_ROUTE
    const labels = { method: request.method, route, status_code: String(reply.statusCode) }
    metrics.httpRequestDuration.observe(labels, reply.elapsedTime / 1000)
    metrics.httpRequests.inc(labels)
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
  })
}

export default fp(requestContext, { name: 'plinth-request-context', fastify: '5.x' })
