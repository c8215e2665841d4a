import { Type } from 'typebox'
import type { PlinthConfig } from '../../config/config.schema.ts'
import { defineJob } from '../../core/jobs.ts'
import type { BuiltinSchedule } from '../../core/module.ts'
import type { HealthCheck } from '../../observability/health.ts'
import type { BackupService, BackupSummary } from './backup.service.ts'

export const BACKUP_JOB = 'plinth.backup'
/** The fixed id of the built-in backup schedule (cron `PLINTH_BACKUP_CRON`). */
export const BACKUP_SCHEDULE = 'plinth.backup'

/**
 * The built-in backup job: create, verify, then prune by retention when the new backup verified.
 * pg-boss runs a scheduled tick once across replicas; one backup runs at a time (an advisory lock
 * on a server). A failed verification fails the job (it is retried, then dead-lettered), so the
 * failure shows in `plinth jobs` and on the metrics.
 */
export function backupJob(service: () => BackupService) {
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
