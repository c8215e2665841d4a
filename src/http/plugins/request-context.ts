import type { ServerResponse } from 'node:http'
import type { FastifyInstance, FastifyReply, FastifyRequest, onSendHookHandler, RouteOptions } from 'fastify'
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
  // A stream's response is marked when its headers go (below): it already left the gauge then.
  function answered(this: ServerResponse & { [STREAM_STARTED]?: boolean }) {
    if (!this[STREAM_STARTED]) metrics.httpInFlight.dec()
  }

  app.decorateRequest(STREAM_STARTED, false)
  // Callback-style hooks: this runs on every request, and async hooks cost a promise each.
  app.addHook('onRequest', (request, reply, done) => {
    // Set first, so that every answer carries it, errors and 404s included.
    reply.header(REQUEST_ID_HEADER, request.id)
    metrics.httpInFlight.inc()
    // 'close' fires once, for finished and aborted responses alike, so the gauge cannot leak.
    // One shared listener (it reads the response it fires on): no closure per request.
    reply.raw.on('close', answered)
    done()
  })
  // A stream is answered when its headers go: counted in flight for hours, it would hold the
  // gauge up, and its duration (its whole life) would land past the last latency bucket.
  const streamStarted: onSendHookHandler = (request, reply, payload, done) => {
    if (reply.statusCode < 300 && !(request as Marked)[STREAM_STARTED]) {
      ;(request as Marked)[STREAM_STARTED] = true
      ;(reply.raw as ServerResponse & { [STREAM_STARTED]?: boolean })[STREAM_STARTED] = true
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
