import type { FastifyInstance } from 'fastify'
import { Type } from 'typebox'
import type { Health, HealthReport } from '../observability/health.ts'
import type { Metrics } from '../observability/metrics.ts'
import { PlinthError } from '../shared/errors.ts'
import { sendProblem } from './plugins/problem-json.ts'

export interface OpsRoutesOptions {
  readonly health: Health
  readonly metrics: Metrics
  readonly metricsPublic: boolean
  readonly version: string
  /** Source revision of the build (PLINTH_REVISION): tells a canary from the stable release. */
  readonly revision?: string
  readonly startedAt: number
  /** True from the first shutdown signal on. */
  readonly isShuttingDown: () => boolean
}

const Status = Type.Union([Type.Literal('ok'), Type.Literal('degraded'), Type.Literal('down')])
const Component = Type.Object({
  status: Type.Union([Type.Literal('up'), Type.Literal('degraded'), Type.Literal('down')]),
  latencyMs: Type.Optional(Type.Number()),
  critical: Type.Optional(Type.Boolean()),
  details: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
  error: Type.Optional(Type.String()),
})
const HealthBody = Type.Object({
  status: Status,
  components: Type.Record(Type.String(), Component),
  version: Type.Optional(Type.String()),
  revision: Type.Optional(Type.String()),
  uptimeSeconds: Type.Optional(Type.Number()),
})
const ReadyBody = Type.Object({
  status: Status,
  failing: Type.Array(Type.Object({ component: Type.String(), error: Type.Optional(Type.String()) })),
})

const SHUTDOWN = { status: 'down' as const, critical: true, latencyMs: 0, error: 'shutting down' }

/** What a caller without operator access may see: statuses only, no latencies, details or errors. */
function summary(report: HealthReport) {
  return {
    status: report.status,
    components: Object.fromEntries(
      Object.entries(report.components).map(([name, c]) => [name, { status: c.status }]),
    ),
  }
}

/**
 * `/live`, `/ready`, `/health` and `/api/metrics`. They sit outside `/api/v1` because load
 * balancers, orchestrators and Prometheus expect them at fixed paths.
 */
export async function opsRoutes(app: FastifyInstance, opts: OpsRoutesOptions): Promise<void> {
  const exempt = { pressureExempt: true, public: true, rateLimit: false as const }

  app.get(
    '/live',
    {
      config: exempt,
      schema: {
        tags: ['operations'],
        summary: 'The process is up (checks no dependency)',
        response: { 200: Type.Object({ status: Type.Literal('ok') }) },
      },
    },
    async () => ({ status: 'ok' as const }),
  )

  app.get(
    '/ready',
    {
      config: { public: true, rateLimit: false, operators: 'details' },
      schema: {
        tags: ['operations'],
        summary: 'Ready for traffic: database answers, migrations current, not shutting down',
        response: { 200: ReadyBody, 503: ReadyBody },
      },
    },
    async (request, reply) => {
      const report = opts.isShuttingDown()
        ? { status: 'down' as const, components: { shutdown: SHUTDOWN } }
        : await opts.health.readiness()
      const operator = await app.opsAccess.isOperator(request)
      const failing = Object.entries(report.components)
        .filter(([, c]) => c.status === 'down')
        .map(([component, c]) => (operator && c.error ? { component, error: c.error } : { component }))
      reply.code(report.status === 'down' ? 503 : 200)
      return { status: report.status, failing }
    },
  )

  app.get(
    '/health',
    {
      config: { ...exempt, operators: 'details' },
      schema: {
        tags: ['operations'],
        summary: 'Per-component health; details (latency, errors, version, uptime) for operators',
        response: { 200: HealthBody, 503: HealthBody },
      },
    },
    async (request, reply) => {
      const report = await opts.health.report()
      const shuttingDown = opts.isShuttingDown()
      const full = {
        status: shuttingDown ? ('down' as const) : report.status,
        components: shuttingDown ? { ...report.components, shutdown: SHUTDOWN } : report.components,
      }
      reply.code(full.status === 'down' ? 503 : 200)
      if (!(await app.opsAccess.isOperator(request))) return summary(full)
      return {
        ...full,
        version: opts.version,
        ...(opts.revision ? { revision: opts.revision } : {}),
        uptimeSeconds: Math.round((Date.now() - opts.startedAt) / 1000),
      }
    },
  )

  app.get(
    '/api/metrics',
    {
      config: { ...exempt, operators: 'required', errors: ['PLINTH_OPS_FORBIDDEN'] },
      schema: {
        tags: ['operations'],
        summary: 'Prometheus metrics (operators, unless PLINTH_METRICS_PUBLIC=true)',
        produces: ['text/plain'],
        response: { 200: Type.String() },
      },
    },
    async (request, reply) => {
      if (!opts.metricsPublic && !(await app.opsAccess.isOperator(request))) {
        return sendProblem(request, reply, new PlinthError('PLINTH_OPS_FORBIDDEN'))
      }
      reply.type(opts.metrics.registry.contentType)
      return opts.metrics.registry.metrics()
    },
  )
}
