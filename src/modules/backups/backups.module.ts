import fp from 'fastify-plugin'
import type { ModuleContext, PlinthModule } from '../../core/module.ts'
import { IN_MEMORY } from '../../infra/db/create-db.ts'
import { type BackupService, createBackupService } from './backup.service.ts'
import {
  backupHealthCheck,
  backupJob,
  backupSchedules,
  drillJob,
  maintenanceSchedules,
  reverifyJob,
} from './backup-job.ts'
import { type BackupMetrics, createBackupMetrics, registerWalLagMetric } from './backup-metrics.ts'
import { backupsRoutes } from './backups.routes.ts'
import { createDrills, type Drills } from './drill.ts'
import createBackupCanaries from './migrations/0025-create-backup-canaries.ts'
import { archiverState, createPitr, type Pitr, pitrSettingsOf } from './pitr.ts'
import { pitrBackupJob, pitrSchedules } from './pitr-job.ts'
import { verifyByRestore } from './pitr-scratch.ts'
import { recordErasures, tombstoneWriter } from './tombstones.ts'

export { type BackupService, type BackupSummary, backupDirOf, createBackupService } from './backup.service.ts'
export {
  BACKUP_DRILL_JOB,
  BACKUP_JOB,
  BACKUP_REVERIFY_JOB,
  BACKUP_SCHEDULE,
  VERIFICATION_FAILED_EVENT,
} from './backup-job.ts'
export type { DrillReport } from './drill.ts'
export { PITR_BACKUP_JOB, PITR_BACKUP_SCHEDULE } from './pitr-job.ts'
export { erasedIn, readTombstones, type Tombstone } from './tombstones.ts'

/** The backup metrics of a module context (registered once per context's registry). */
const metricsByCtx = new WeakMap<ModuleContext, BackupMetrics>()
function metricsOf(ctx: ModuleContext): BackupMetrics {
  let m = metricsByCtx.get(ctx)
  if (!m) {
    // The newest verified backup is read from the target, where there is one (not for an in-memory
    // database without PLINTH_BACKUP_DIR or a bucket).
    const hasTarget =
      ctx.config.dataDir !== IN_MEMORY || !!ctx.config.backupDir || !!ctx.config.backupS3Bucket
    m = createBackupMetrics(ctx.metrics, hasTarget ? () => newestVerified(backupServiceOf(ctx)) : undefined)
    // Read through the pool: a scrape opens no connection of its own.
    if (ctx.config.pitrStanza && ctx.config.databaseUrl)
      registerWalLagMetric(ctx.metrics, async () => (await archiverState(ctx.db.pool, new Date())).lagSeconds)
    metricsByCtx.set(ctx, m)
  }
  return m
}

/** The finish time (Unix seconds) of the newest verified backup of each kind in the target. */
async function newestVerified(service: BackupService): Promise<Map<string, number>> {
  const newest = new Map<string, number>()
  for (const b of await service.list()) {
    if (b.status !== 'verified' || !b.manifest || newest.has(b.manifest.kind)) continue
    newest.set(b.manifest.kind, new Date(b.manifest.finishedAt).getTime() / 1000)
  }
  return newest
}

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
      metrics: metricsOf(ctx),
      backupPaths: () => ctx.backupPaths,
    })
    services.set(ctx, s)
  }
  return s
}

const drillsByCtx = new WeakMap<ModuleContext, Drills>()
/** The disaster-recovery drills of a module context (reports stored in the backup target). */
export function drillsOf(ctx: ModuleContext): Drills {
  let d = drillsByCtx.get(ctx)
  if (!d) {
    const url = ctx.config.databaseUrl
    d = createDrills({
      service: () => backupServiceOf(ctx),
      target: () => backupServiceOf(ctx).target,
      db: ctx.db,
      audit: ctx.audit,
      logger: ctx.logger,
      launcher: ctx.instances,
      databaseUrl: url,
      pitr: ctx.config.pitrStanza
        ? () => ({
            settings: pitrOf(ctx).settings,
            pgBin: ctx.config.pitrPgBin,
            newestLabel: async () => (await pitrOf(ctx).status()).lastBackup?.label ?? null,
          })
        : undefined,
      walLag:
        ctx.config.pitrStanza && url
          ? async () => (await archiverState(url, new Date())).lagSeconds
          : undefined,
    })
    drillsByCtx.set(ctx, d)
  }
  return d
}

/** Whether this context has a backup target (not for an in-memory database without a directory or bucket). */
function hasTarget(ctx: ModuleContext): boolean {
  return ctx.config.dataDir !== IN_MEMORY || !!ctx.config.backupDir || !!ctx.config.backupS3Bucket
}

const tombstoneWriters = new WeakMap<ModuleContext, ReturnType<typeof tombstoneWriter>>()
/**
 * The erasure tombstones of a context's backup target (tombstones.ts): `sync()` merges in every
 * erasure the audit log records and returns the whole list (what a restore re-applies).
 */
export function tombstonesOf(ctx: ModuleContext): ReturnType<typeof tombstoneWriter> {
  let w = tombstoneWriters.get(ctx)
  if (!w) {
    w = tombstoneWriter(
      () => backupServiceOf(ctx).target,
      () => ctx.audit.erasures(ctx.db.kysely),
    )
    tombstoneWriters.set(ctx, w)
  }
  return w
}

const pitrs = new WeakMap<ModuleContext, Pitr>()
function pitrOf(ctx: ModuleContext): Pitr {
  let p = pitrs.get(ctx)
  if (!p) {
    p = createPitr({ settings: pitrSettingsOf(ctx.config), logger: ctx.logger })
    pitrs.set(ctx, p)
  }
  return p
}

/**
 * Backups (docs/operations/backups.md): a sealed manifest and an encrypted, chunk-authenticated
 * archive per backup, made by `pg_dump -Fc` on a server and PGlite's `dumpDataDir` when embedded,
 * kept in a backup target (a local directory or an S3 bucket), verified by restoring to a scratch
 * target; and, with PLINTH_PITR_STANZA, point-in-time recovery through pgBackRest (decision 0018).
 * Its one table, `backup_canaries`, holds the drills' canary rows; everything else lives in the
 * target, so that it survives the database.
 */
export const backupsModule: PlinthModule = {
  name: 'backups',
  migrations: { '0025-create-backup-canaries': createBackupCanaries },
  // The backup target's connections (an S3 bucket's clients) close with the instance, every role's.
  async plugins(app, ctx) {
    await app.register(
      fp(
        async (root) => {
          root.addHook('onClose', async () => services.get(ctx)?.close())
        },
        { name: 'plinth-backups-lifecycle' },
      ),
    )
  },
  routes: (app, ctx) =>
    backupsRoutes(
      app,
      ctx,
      () => backupServiceOf(ctx),
      () => drillsOf(ctx),
    ),
  jobs: (ctx) => [
    backupJob(
      () => backupServiceOf(ctx),
      () => (hasTarget(ctx) ? tombstonesOf(ctx).sync() : Promise.resolve()),
    ),
    drillJob(() => drillsOf(ctx)),
    reverifyJob(() => backupServiceOf(ctx), ctx.config, ctx.events),
    ...(ctx.config.pitrStanza
      ? [
          pitrBackupJob(() => pitrOf(ctx), metricsOf(ctx), {
            restoreCheck: !ctx.config.pitrRestoreCheck
              ? undefined
              : () =>
                  verifyByRestore(pitrOf(ctx).settings, {
                    logger: ctx.logger,
                    databaseUrl: ctx.config.databaseUrl,
                    pgBin: ctx.config.pitrPgBin,
                  }),
          }),
        ]
      : []),
  ],
  schedules: (ctx) => [
    ...backupSchedules(ctx.config),
    // Re-verification and drills need a backup target: none in memory without a directory or bucket.
    ...(ctx.config.dataDir === IN_MEMORY && !ctx.config.backupDir && !ctx.config.backupS3Bucket
      ? []
      : maintenanceSchedules(ctx.config)),
    ...pitrSchedules(ctx.config),
  ],
  // Every erasure leaves a tombstone in the backup target (re-applied after a restore): this
  // process's at once, and every process's from the audit log, at start and after each erasure.
  start: async (ctx) => {
    if (!hasTarget(ctx)) return
    const tombstones = tombstonesOf(ctx)
    const failed = (err: unknown) =>
      ctx.logger.error({ err }, 'could not record an erasure tombstone in the backup target')
    recordErasures(
      ctx.securityEvents,
      async (t) => {
        await tombstones.add(t)
        await tombstones.sync()
      },
      failed,
    )
    await tombstones.sync().catch(failed)
  },
  // Registered at boot, so that they are at /api/metrics from the first scrape of every replica.
  metrics: (ctx) => {
    metricsOf(ctx)
  },
  healthChecks: (ctx) => {
    return backupSchedules(ctx.config).length > 0
      ? [backupHealthCheck(ctx.config, () => backupServiceOf(ctx))]
      : []
  },
}
