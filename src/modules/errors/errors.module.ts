import fp from 'fastify-plugin'
import { Counter } from 'prom-client'
import type { ModuleContext, PlinthModule } from '../../core/module.ts'
import { PLINTH_VERSION } from '../../core/version.ts'
import { activeTraceId } from '../../observability/tracing.ts'
import { createErrorRecorder, type ErrorRecorder } from './error-store.ts'
import { errorsRetention } from './errors.retention.ts'
import { errorsRoutes } from './errors.routes.ts'
import { createErrorService, type ErrorService } from './errors.service.ts'
import createErrorGroups from './migrations/0014-create-error-groups.ts'

/** The version "new since the deploy" is measured from: the release and its revision. */
const versionOf = (ctx: ModuleContext) =>
  `${PLINTH_VERSION}${ctx.config.revision ? `+${ctx.config.revision}` : ''}`

const parts = new WeakMap<ModuleContext, { recorder: ErrorRecorder; service: ErrorService }>()
function partsOf(ctx: ModuleContext) {
  let p = parts.get(ctx)
  if (!p) {
    const version = versionOf(ctx)
    p = {
      recorder: createErrorRecorder({ db: ctx.db.kysely, logger: ctx.logger, version, now: ctx.now }),
      service: createErrorService({ db: ctx.db.kysely, audit: ctx.audit, version, now: ctx.now }),
    }
    parts.set(ctx, p)
  }
  return p
}

/**
 * Error tracking without a third-party service: unexpected errors — 500 answers, jobs that failed
 * their last attempt, uncaught exceptions — grouped by fingerprint (error name, normalised top
 * frames, route or job) with counts, first and last seen, a sample request id and trace id, in
 * `error_groups`; `GET /api/v1/admin/errors` lists them, `newSinceDeploy` those first seen since the
 * running version started. Designed refusals (4xx, 503 overload/shutdown/database away) are not
 * errors here: metrics and alerts watch those.
 */
export const errorsModule: PlinthModule = {
  name: 'errors',
  migrations: { '0014-create-error-groups': createErrorGroups },
  async plugins(app, ctx) {
    const { recorder } = partsOf(ctx)
    await app.register(
      fp(
        async (instance) => {
          // Only a request that threw pays anything: onError sees the error (inside the request's
          // trace), and once the answer is written its status says whether the error handler
          // made it a 500 (an unexpected error) or a designed refusal.
          instance.addHook('onError', (request, reply, error, done) => {
            const traceId = activeTraceId()
            reply.raw.once('finish', () => {
              if (reply.statusCode !== 500) return
              ctx.errorReports.report({
                error,
                source: 'http',
                where: `${request.method} ${request.routeOptions.url ?? 'unmatched'}`,
                requestId: request.id,
                traceId,
              })
            })
            done()
          })
          // Counts still in memory are written before the database closes.
          instance.addHook('onClose', () => recorder.stop())
        },
        { name: 'plinth-error-tracking' },
      ),
    )
  },
  routes: (api, ctx) => errorsRoutes(api, () => partsOf(ctx).service),
  retention: (ctx) => errorsRetention(ctx.config),
  metrics(ctx) {
    const errors = new Counter({
      name: 'plinth_errors_total',
      help: 'Unexpected errors reported by this process (500 answers, jobs failed for the last time, uncaught exceptions), by source; GET /api/v1/admin/errors groups them.',
      labelNames: ['source'] as const,
      registers: [ctx.metrics.registry],
    })
    for (const source of ['http', 'job', 'process']) errors.inc({ source }, 0)
    ctx.errorReports.subscribe((report) => {
      errors.inc({ source: report.source })
    })
  },
  async start(ctx) {
    const { recorder, service } = partsOf(ctx)
    await service.deployedAt()
    ctx.errorReports.subscribe((report) => {
      recorder.add(report)
      // The process is about to exit: write now rather than at the next tick.
      if (report.source === 'process') return recorder.flush()
    })
    recorder.start()
  },
}
