import type { PlinthModule } from '../../core/module.ts'
import './audit.tables.ts'
import { auditRetention } from './audit.retention.ts'
import { auditRoutes } from './audit.routes.ts'
import { createAudit } from './audit.service.ts'
import { auditPersonalData } from './audit-erasure.ts'
import { auditMetricsOf, auditVerifyJob, auditVerifySchedules } from './audit-verify-job.ts'
import createAuditLog from './migrations/0006-create-audit-log.ts'
import auditErasure from './migrations/0010-audit-erasure.ts'
import auditErasureIndex from './migrations/0045-audit-erasure-index.ts'
import auditChecksOnInput from './migrations/0046-audit-checks-on-input.ts'

export { pruneAudit, verifyAuditChain } from './audit-chain.ts'
export { exportAudit, listAudit } from './audit-query.ts'
export {
  AUDIT_VERIFICATION_FAILED_EVENT,
  AUDIT_VERIFY_JOB,
  AUDIT_VERIFY_SCHEDULE,
} from './audit-verify-job.ts'

/**
 * The audit log: owns `audit_log` and `audit_checkpoints`, serves `GET /api/v1/audit` and its
 * NDJSON export, and seals recorded rows into the hash chain. It provides the writer
 * (`createAudit`), which reaches every module as `ctx.audit`. The built-in `plinth.audit-verify` job
 * verifies the chain on `PLINTH_AUDIT_VERIFY_CRON` and reports it on the metrics.
 */
export const auditModule: PlinthModule = {
  name: 'audit',
  migrations: {
    '0006-create-audit-log': createAuditLog,
    '0010-audit-erasure': auditErasure,
    '0045-audit-erasure-index': auditErasureIndex,
    '0046-audit-checks-on-input': auditChecksOnInput,
  },
  personalData: auditPersonalData,
  routes: auditRoutes,
  retention: (ctx) => auditRetention(ctx.config),
  metrics(ctx) {
    auditMetricsOf(ctx)
  },
  jobs: (ctx) => [auditVerifyJob(ctx, auditMetricsOf(ctx))],
  schedules: (ctx) => auditVerifySchedules(ctx.config),
  async start(ctx) {
    ctx.audit.start()
  },
  provides: {
    audit(ctx) {
      const audit = createAudit({ db: ctx.db.kysely, logger: ctx.logger })
      return { value: audit, close: () => audit.close() }
    },
  },
}
