import type { ModuleContext, PlinthModule } from '../../core/module.ts'
import { registerAlertMetrics } from './alert-metrics.ts'
import { alertsRetention } from './alerts.retention.ts'
import { createEvaluator } from './evaluator.ts'
import { incidentsRoutes } from './incidents.routes.ts'
import { createIncidentService, type IncidentService } from './incidents.service.ts'
import createIncidents from './migrations/0024-create-incidents.ts'
import { notifyJob } from './notify.ts'
import { createSampler } from './sampler.ts'
import './alerts.tables.ts'

export { createEvaluator } from './evaluator.ts'
export { type Incident, type IncidentService, NOTIFY_JOB } from './incidents.service.ts'
export { chatMessage } from './notify.ts'

const services = new WeakMap<ModuleContext, IncidentService>()
/** The incident service of a module context (one per context). */
export function incidentServiceOf(ctx: ModuleContext): IncidentService {
  let s = services.get(ctx)
  if (!s) {
    s = createIncidentService(ctx)
    services.set(ctx, s)
  }
  return s
}

/** The running sampler and evaluator of a context (tests drive them). */
export const alertRuntimes = new WeakMap<
  ModuleContext,
  { sampler: ReturnType<typeof createSampler>; evaluator?: ReturnType<typeof createEvaluator> }
>()

/**
 * Built-in alerting (docs/operations/alerting.md, decision 0024): the conditions of the shipped
 * Prometheus rules, anomaly detectors and the credential-stuffing pattern, evaluated by one worker
 * over every process's samples; incidents at `/api/v1/admin/incidents`, notified once through
 * `incident.*` events (signed webhooks) and e-mail, escalated when nobody acknowledges them.
 * Every process also exports the metrics those rules need (failed sign-ins, heap limit, TLS expiry).
 */
export const alertsModule: PlinthModule = {
  name: 'alerts',
  migrations: { '0024-create-incidents': createIncidents },
  plugins(app, ctx) {
    const metrics = registerAlertMetrics(ctx)
    if (!ctx.config.alertsEnabled) return
    // Only serving processes sample and evaluate: a CLI command builds a Plinth but never listens.
    app.addHook('onListen', async () => {
      const sampler = createSampler(ctx, metrics)
      sampler.start()
      const evaluator = ctx.config.role === 'api' ? undefined : createEvaluator(ctx, incidentServiceOf(ctx))
      evaluator?.start()
      alertRuntimes.set(ctx, { sampler, ...(evaluator ? { evaluator } : {}) })
    })
    app.addHook('onClose', async () => {
      const r = alertRuntimes.get(ctx)
      alertRuntimes.delete(ctx)
      await r?.evaluator?.stop()
      await r?.sampler.stop()
    })
  },
  routes: (app, ctx) => incidentsRoutes(app, () => incidentServiceOf(ctx)),
  jobs: (ctx) => [notifyJob(ctx)],
  retention: (ctx) => alertsRetention(ctx.config),
  personalData: [
    {
      table: 'incident_events',
      description: 'Incidents you acknowledged or resolved (the timeline keeps the step, without your id)',
      match: { column: 'actor_id', holds: 'user-id' },
      columns: [{ name: 'actor_id', export: 'value' }],
      context: ['incident_id', 'kind', 'at'],
      erase: { action: 'set-null' },
    },
  ],
}
