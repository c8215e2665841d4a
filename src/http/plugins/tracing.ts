import {
  type Context,
  context,
  propagation,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  trace,
} from '@opentelemetry/api'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { recordError, SpanStatusCode, TRACER_NAME } from '../../observability/tracing.ts'
import { UNMATCHED_ROUTE } from './request-context.ts'

const SPAN = Symbol('plinth.span')
type Traced = FastifyRequest & { [SPAN]?: Span }

const getter = {
  keys: (carrier: FastifyRequest['headers']) => Object.keys(carrier),
  get: (carrier: FastifyRequest['headers'], key: string) => carrier[key],
}

/**
 * One SERVER span per request, registered only while tracing is on (create-server.ts), first of
 * all hooks. The span continues the caller's trace when the request carries a valid `traceparent`
 * (the sampler decides whether to follow its sampled flag), is named `METHOD /route/template` once
 * routed, and carries the request id, route and status. The rest of the request — hooks, body
 * parsing, handler, the services it calls, `request completed` — runs inside the span's context,
 * so every log line carries `traceId`/`spanId`, database and Redis spans nest under it, and jobs
 * enqueued by the handler remember it.
 *
 * Plinth's own hooks rather than @opentelemetry/instrumentation-http and @fastify/otel: those patch
 * `node:http` and Fastify at import time (an ES module needs a loader hook in front of every import,
 * decision 0023), and one span per request is all the HTTP layer needs to say.
 */
async function tracingPlugin(app: FastifyInstance): Promise<void> {
  const tracer = trace.getTracer(TRACER_NAME)
  app.addHook('onRequest', (request, reply, done) => {
    const parent: Context = propagation.extract(ROOT_CONTEXT, request.headers, getter)
    const span = tracer.startSpan(
      request.method,
      {
        kind: SpanKind.SERVER,
        attributes: {
          'http.request.method': request.method,
          'url.path': request.url.split('?', 1)[0] ?? '/',
          'plinth.request_id': request.id,
        },
      },
      parent,
    )
    ;(request as Traced)[SPAN] = span
    const active = trace.setSpan(parent, span)
    // Body chunks and the response's events are emitted from the socket's context, not ours.
    context.bind(active, request.raw)
    context.bind(active, reply.raw)
    context.with(active, done)
  })
  app.addHook('onError', (request, _reply, error, done) => {
    const span = (request as Traced)[SPAN]
    if (span) recordError(span, error)
    done()
  })
  // A request the client gave up on gets no onResponse.
  app.addHook('onRequestAbort', (request, done) => {
    const span = (request as Traced)[SPAN]
    if (span) {
      span.setAttribute('plinth.aborted', true)
      span.end()
    }
    done()
  })
  app.addHook('onResponse', (request, reply, done) => {
    const span = (request as Traced)[SPAN]
    if (span) {
      const route = request.routeOptions.url ?? UNMATCHED_ROUTE
      span.updateName(`${request.method} ${route}`)
      span.setAttribute('http.route', route)
      span.setAttribute('http.response.status_code', reply.statusCode)
      if (reply.statusCode >= 500) span.setStatus({ code: SpanStatusCode.ERROR })
      span.end()
    }
    done()
  })
}

export default fp(tracingPlugin, { name: 'plinth-tracing', fastify: '5.x' })
