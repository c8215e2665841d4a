import { Counter, Gauge } from 'prom-client'
import { Type } from 'typebox'
import type { PlinthConfig } from '../../config/config.schema.ts'
import type { EventBus } from '../../core/events.ts'
import { defineJob } from '../../core/jobs.ts'
import type { BuiltinSchedule, ModuleContext } from '../../core/module.ts'
import type { Metrics } from '../../observability/metrics.ts'
import { verifyAuditChain } from './audit-chain.ts'

export const AUDIT_VERIFY_JOB = 'plinth.audit-verify'
/** The fixed id of the built-in audit verification schedule (cron `PLINTH_AUDIT_VERIFY_CRON`). */
export const AUDIT_VERIFY_SCHEDULE = 'plinth.audit-verify'
/** The event a failed verification emits: webhooks subscribed to it are the alert. */
export const AUDIT_VERIFICATION_FAILED_EVENT = 'audit.verification_failed'

/** What the verification job reports to the metrics. */
export interface AuditMetrics {
  /** A verification ran to its end (Unix ms), and whether the chain held. */
  verified(atMs: number, ok: boolean): void
}

/**
 * Registers the audit metrics: `plinth_audit_verification_failures_total` (0 from the first scrape)
 * and `plinth_audit_last_verification_timestamp_seconds` (0 until this process verified the chain).
 */
export function createAuditMetrics(metrics: Metrics): AuditMetrics {
  const registers = [metrics.registry]
  const failures = new Counter({
    name: 'plinth_audit_verification_failures_total',
    help: 'Verifications of the audit hash chain (the plinth.audit-verify job) that found a broken chain: alert on any increase.',
    registers,
  })
  const last = new Gauge({
    name: 'plinth_audit_last_verification_timestamp_seconds',
    help: 'When this process last verified the audit hash chain to its end, whatever the result (Unix seconds; 0: not yet).',
    registers,
  })
  return {
    verified(atMs, ok) {
      last.set(atMs / 1000)
      if (!ok) failures.inc()
    },
  }
}

const metricsByCtx = new WeakMap<ModuleContext, AuditMetrics>()
/** The audit metrics of a module context (registered once per context's registry). */
export function auditMetricsOf(ctx: ModuleContext): AuditMetrics {
  let m = metricsByCtx.get(ctx)
  if (!m) {
    m = createAuditMetrics(ctx.metrics)
    metricsByCtx.set(ctx, m)
  }
  return m
}

/**
 * The built-in audit verification job: verifies the hash chain exactly as `plinth audit verify`
 * does (`verifyAuditChain`). A broken chain counts in `plinth_audit_verification_failures_total`,
 * emits `audit.verification_failed` (`{at, checked, from, failure: {seq, id, reason, message}}`)
 * and fails the job, so that it shows in `plinth jobs`. A verification that could not run (the
 * database does not answer) fails the job without counting: it found nothing.
 */
export function auditVerifyJob(
  ctx: Pick<ModuleContext, 'db' | 'now'> & { events: Pick<EventBus, 'emit'> },
  metrics: AuditMetrics,
) {
  return defineJob({
    name: AUDIT_VERIFY_JOB,
    description:
      'Verifies the audit log’s hash chain (as plinth audit verify); a broken chain emits audit.verification_failed (docs/operations/audit.md).',
    payload: Type.Object({}, { additionalProperties: false }),
    policy: { concurrency: 1, retryLimit: 0, timeout: 6 * 3600, deadLetter: false },
    async handler(job) {
      const report = await verifyAuditChain(ctx.db.kysely)
      const at = ctx.now()
      metrics.verified(at, report.ok)
      const summary = {
        ok: report.ok,
        checked: report.checked,
        unsealed: report.unsealed,
        head: report.head,
      }
      if (report.ok) {
        job.logger.info(summary, 'audit chain verified')
        return summary
      }
      const failure = report.failure!
      job.logger.error({ ...summary, failure }, 'audit chain verification failed')
      await ctx.events.emit(AUDIT_VERIFICATION_FAILED_EVENT, {
        at: new Date(at).toISOString(),
        checked: report.checked,
        from: report.from,
        failure: { seq: failure.seq, id: failure.id, reason: failure.reason, message: failure.message },
      })
      throw new Error(`audit chain broken at seq ${failure.seq} (id ${failure.id}): ${failure.message}`)
    },
  })
}

export function auditVerifySchedules(config: Pick<PlinthConfig, 'auditVerifyCron'>): BuiltinSchedule[] {
  if (config.auditVerifyCron.trim().toLowerCase() === 'off') return []
  return [
    {
      id: AUDIT_VERIFY_SCHEDULE,
      input: {
        jobName: AUDIT_VERIFY_JOB,
        cron: config.auditVerifyCron,
        payload: {},
        description: 'Built-in: verify the audit hash chain (docs/operations/audit.md).',
      },
    },
  ]
}
