import type { ModuleContext, PlinthModule } from '../../core/module.ts'
import { type BackupService, createBackupService } from './backup.service.ts'
import { backupHealthCheck, backupJob, backupSchedules } from './backup-job.ts'
import { createBackupMetrics } from './backup-metrics.ts'
import { backupsRoutes } from './backups.routes.ts'

export { type BackupService, type BackupSummary, backupDirOf, createBackupService } from './backup.service.ts'
export { BACKUP_JOB, BACKUP_SCHEDULE } from './backup-job.ts'

/** The backup service of a module context (one per context, built on first use). */
const services = new WeakMap<ModuleContext, BackupService>()
export function backupServiceOf(ctx: ModuleContext): BackupService {
  let s = services.get(ctx)
  if (!s) {
    s = createBackupService({
      config: ctx.config,
      logger: ctx.logger,
      db: ctx.db,
      keyring: ctx.keyring,
      audit: ctx.audit,
      metrics: createBackupMetrics(ctx.metrics),
    })
    services.set(ctx, s)
  }
  return s
}

/**
 * Backups (docs/operations/backups.md): a sealed manifest and an encrypted, chunk-authenticated
 * archive per backup, made by `pg_dump -Fc` on a server and PGlite's `dumpDataDir` when embedded,
 * kept in a backup target (a local directory today), verified by restoring to a scratch target.
 * No tables of its own: everything lives in the target, so that it survives the database.
 */
export const backupsModule: PlinthModule = {
  name: 'backups',
  routes: (app, ctx) => backupsRoutes(app, ctx, () => backupServiceOf(ctx)),
  jobs: (ctx) => [backupJob(() => backupServiceOf(ctx))],
  schedules: (ctx) => backupSchedules(ctx.config),
  healthChecks: (ctx) =>
    backupSchedules(ctx.config).length > 0 ? [backupHealthCheck(ctx.config, () => backupServiceOf(ctx))] : [],
}
