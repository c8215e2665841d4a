import { Type } from 'typebox'
import type { PlinthConfig } from '../../config/config.schema.ts'
import type { EventBus } from '../../core/events.ts'
import { defineJob } from '../../core/jobs.ts'
import type { BuiltinSchedule } from '../../core/module.ts'
import type { HealthCheck } from '../../observability/health.ts'
import type { BackupService, BackupSummary } from './backup.service.ts'
import type { Drills } from './drill.ts'

export const BACKUP_JOB = 'plinth.backup'
/** The fixed id of the built-in backup schedule (cron `PLINTH_BACKUP_CRON`). */
export const BACKUP_SCHEDULE = 'plinth.backup'

/**
 * The built-in backup job: create, verify, then prune by retention when the new backup verified.
 * pg-boss runs a scheduled tick once across replicas; one backup runs at a time (an advisory lock
 * on a server). A failed verification fails the job (it is retried, then dead-lettered), so the
 * failure shows in `plinth jobs` and on the metrics.
 */
export function backupJob(service: () => BackupService, beforeBackup?: () => Promise<unknown>) {
  return defineJob({
    name: BACKUP_JOB,
    description:
      'Backs up the database, verifies the backup by restoring it to a scratch target, then prunes by retention (docs/operations/backups.md).',
    payload: Type.Object(
      { prune: Type.Optional(Type.Boolean({ default: true })) },
      { additionalProperties: false },
    ),
    policy: { concurrency: 1, retryLimit: 2, retryDelay: 300, timeout: 3600, deadLetter: true },
    async handler(job) {
      // The erasure tombstones are brought up to date from the audit log first (never fatal).
      await beforeBackup?.().catch((err: unknown) =>
        job.logger.warn({ err }, 'could not bring the erasure tombstones up to date'),
      )
      const created = await service().create()
      const verification = await service().verify(created.id)
      if (!verification.ok)
        throw new Error(
          `backup ${created.id} failed verification: ${verification.checks
            .filter((c) => !c.ok)
            .map((c) => c.name)
            .join(', ')}`,
        )
      const pruned = job.payload.prune === false ? undefined : await service().prune()
      job.logger.info({ backupId: created.id, removed: pruned?.remove.length ?? 0 }, 'scheduled backup done')
      return {
        id: created.id,
        bytes: created.manifest?.parts[0]?.bytes ?? 0,
        removed: pruned?.remove.map((r) => r.id) ?? [],
      }
    },
  })
}

export function backupSchedules(config: Pick<PlinthConfig, 'backupCron'>): BuiltinSchedule[] {
  if (config.backupCron.trim().toLowerCase() === 'off') return []
  return [
    {
      id: BACKUP_SCHEDULE,
      input: {
        jobName: BACKUP_JOB,
        cron: config.backupCron,
        payload: {},
        description: 'Built-in: back up, verify and prune (docs/operations/backups.md).',
      },
    },
  ]
}

/**
 * `/health` component `backups` (not critical) while the schedule is on: `degraded` when the newest
 * verified backup is older than `PLINTH_BACKUP_MAX_AGE` (or there is none, once the process has run
 * that long). Reads the target at most every 30 s.
 */
export function backupHealthCheck(
  config: Pick<PlinthConfig, 'backupMaxAge'>,
  service: () => BackupService,
  startedAt = Date.now(),
): HealthCheck {
  let cached: { at: number; newest: BackupSummary | undefined } | undefined
  return {
    name: 'backups',
    critical: false,
    async check() {
      if (!cached || Date.now() - cached.at > 30_000) {
        const list = await service().list()
        cached = { at: Date.now(), newest: list.find((b) => b.status === 'verified') }
      }
      const newestAt = cached.newest?.manifest
        ? new Date(cached.newest.manifest.finishedAt).getTime()
        : undefined
      const ageMs = Date.now() - (newestAt ?? startedAt)
      return {
        status: ageMs > config.backupMaxAge ? 'degraded' : 'up',
        details: {
          newestVerified: cached.newest?.id ?? null,
          ageSeconds: newestAt === undefined ? null : Math.round(ageMs / 1000),
          maxAgeSeconds: Math.round(config.backupMaxAge / 1000),
        },
      }
    },
  }
}

export const BACKUP_DRILL_JOB = 'plinth.backup-drill'
export const BACKUP_REVERIFY_JOB = 'plinth.backup-reverify'
/** The event a failed (re-)verification emits: webhooks subscribed to it are the alert. */
export const VERIFICATION_FAILED_EVENT = 'backup.verification_failed'

/** A disaster-recovery drill (`plinth dr drill`, POST /admin/backups/drills, `PLINTH_BACKUP_DRILL_CRON`). */
export function drillJob(drills: () => Drills) {
  return defineJob({
    name: BACKUP_DRILL_JOB,
    description:
      'Disaster-recovery drill: restores the newest backup (fresh: one it takes first) to a scratch target, brings a Plinth up on it, checks it, measures RTO and RPO, stores the report (docs/operations/disaster-recovery.md).',
    payload: Type.Object(
      {
        fresh: Type.Optional(Type.Boolean({ default: false })),
        pitr: Type.Optional(Type.Boolean({ default: false })),
        toTime: Type.Optional(Type.String({ maxLength: 40 })),
      },
      { additionalProperties: false },
    ),
    policy: { concurrency: 1, retryLimit: 0, timeout: 3600, deadLetter: true },
    async handler(job) {
      const report = await drills().run({
        fresh: job.payload.fresh === true,
        pitr: job.payload.pitr === true || job.payload.toTime ? { toTime: job.payload.toTime } : undefined,
      })
      job.logger.info({ drill: report.id, ok: report.ok }, 'drill done')
      if (!report.ok)
        throw new Error(
          `drill ${report.id} failed: ${report.checks
            .filter((c) => !c.ok)
            .map((c) => c.name)
            .join(', ')}`,
        )
      return { drill: report.id, rtoSeconds: report.rtoSeconds, rpoSeconds: report.rpoSeconds }
    },
  })
}

/**
 * Picks what a re-verification run checks: the newest backup and `sample - 1` others at random
 * (damaged ones included: their failure is the finding).
 */
export function reverifySample(ids: readonly string[], sample: number, random = Math.random): string[] {
  if (ids.length <= sample) return [...ids]
  const [newest, ...rest] = ids
  const pool = [...rest]
  const picked = [newest!]
  while (picked.length < sample && pool.length > 0)
    picked.push(pool.splice(Math.floor(random() * pool.length), 1)[0]!)
  return picked
}

/**
 * Re-verifies a sample of the stored backups (a backup that verified once can rot in its target).
 * Each failure emits `backup.verification_failed` (webhooks subscribed to it alert) and counts in
 * `plinth_backup_verification_failures_total`; the job then fails, so it shows in `plinth jobs`.
 */
export function reverifyJob(
  service: () => BackupService,
  config: Pick<PlinthConfig, 'backupReverifySample'>,
  events: Pick<EventBus, 'emit'>,
) {
  return defineJob({
    name: BACKUP_REVERIFY_JOB,
    description:
      'Re-verifies a sample of older backups (restore to a scratch target and check); a failure emits backup.verification_failed.',
    payload: Type.Object(
      { sample: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })) },
      { additionalProperties: false },
    ),
    policy: { concurrency: 1, retryLimit: 0, timeout: 6 * 3600, deadLetter: true },
    async handler(job) {
      const ids = (await service().list()).map((b) => b.id)
      const picked = reverifySample(ids, job.payload.sample ?? config.backupReverifySample)
      const failed: string[] = []
      for (const id of picked) {
        const v = await service().verify(id)
        if (!v.ok) {
          failed.push(id)
          await events.emit(VERIFICATION_FAILED_EVENT, {
            backupId: id,
            at: v.at,
            failed: v.checks.filter((c) => !c.ok).map((c) => ({ name: c.name, detail: c.detail })),
          })
        }
      }
      job.logger.info({ verified: picked.length, failed: failed.length }, 'backups re-verified')
      if (failed.length > 0) throw new Error(`re-verification failed for ${failed.join(', ')}`)
      return { verified: picked, failed }
    },
  })
}

export function maintenanceSchedules(
  config: Pick<PlinthConfig, 'backupReverifyCron' | 'backupDrillCron'>,
): BuiltinSchedule[] {
  const on = (cron: string) => cron.trim().toLowerCase() !== 'off'
  return [
    ...(on(config.backupReverifyCron)
      ? [
          {
            id: BACKUP_REVERIFY_JOB,
            input: {
              jobName: BACKUP_REVERIFY_JOB,
              cron: config.backupReverifyCron,
              payload: {},
              description: 'Built-in: re-verify a sample of older backups (docs/operations/backups.md).',
            },
          },
        ]
      : []),
    ...(on(config.backupDrillCron)
      ? [
          {
            id: BACKUP_DRILL_JOB,
            input: {
              jobName: BACKUP_DRILL_JOB,
              cron: config.backupDrillCron,
              payload: {},
              description: 'Built-in: disaster-recovery drill (docs/operations/disaster-recovery.md).',
            },
          },
        ]
      : []),
  ]
}
