import { Type } from 'typebox'
import type { PlinthConfig } from '../../config/config.schema.ts'
import { defineJob } from '../../core/jobs.ts'
import type { BuiltinSchedule } from '../../core/module.ts'
import type { BackupMetrics } from './backup-metrics.ts'
import type { Pitr } from './pitr.ts'

export const PITR_BACKUP_JOB = 'plinth.pitr-backup'
export const PITR_BACKUP_SCHEDULE = 'plinth.pitr-backup'

/**
 * The pgBackRest backup job: full on Sundays (UTC) or when asked, differential otherwise, then
 * `pgbackrest verify`; a failed verification fails the job (retried, then dead-lettered) and counts
 * in `plinth_backup_verification_failures_total{kind="pgbackrest"}`.
 */
export function pitrBackupJob(pitr: () => Pitr, metrics: BackupMetrics | undefined, now = () => new Date()) {
  return defineJob({
    name: PITR_BACKUP_JOB,
    description:
      'Takes a pgBackRest backup (full on Sundays, differential otherwise) and runs pgbackrest verify (docs/operations/backups.md).',
    payload: Type.Object(
      { type: Type.Optional(Type.Union([Type.Literal('full'), Type.Literal('diff'), Type.Literal('incr')])) },
      { additionalProperties: false },
    ),
    policy: { concurrency: 1, retryLimit: 2, retryDelay: 300, timeout: 6 * 3600, deadLetter: true },
    async handler(job) {
      const type = job.payload.type ?? (now().getUTCDay() === 0 ? 'full' : 'diff')
      const backup = await pitr().backup(type)
      metrics?.pitrBackedUp?.(Date.parse(backup.finishedAt) / 1000)
      const verified = await pitr().verify()
      metrics?.verified('pgbackrest', verified.ok)
      if (!verified.ok)
        throw new Error(`pgbackrest verify failed after backup ${backup.label}: ${verified.detail}`)
      job.logger.info({ label: backup.label, type }, 'scheduled pgBackRest backup done')
      return { label: backup.label, type, sizeBytes: backup.sizeBytes }
    },
  })
}

export function pitrSchedules(
  config: Pick<PlinthConfig, 'pitrStanza' | 'pitrBackupCron'>,
): BuiltinSchedule[] {
  if (!config.pitrStanza || config.pitrBackupCron.trim().toLowerCase() === 'off') return []
  return [
    {
      id: PITR_BACKUP_SCHEDULE,
      input: {
        jobName: PITR_BACKUP_JOB,
        cron: config.pitrBackupCron,
        payload: {},
        description: 'Built-in: pgBackRest backup and verify (docs/operations/backups.md).',
      },
    },
  ]
}
