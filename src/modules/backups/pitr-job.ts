import { Type } from 'typebox'
import type { PlinthConfig } from '../../config/config.schema.ts'
import { defineJob } from '../../core/jobs.ts'
import type { BuiltinSchedule } from '../../core/module.ts'
import type { BackupMetrics } from './backup-metrics.ts'
import type { Pitr } from './pitr.ts'
import type { VerificationCheck } from './verification.ts'

export const PITR_BACKUP_JOB = 'plinth.pitr-backup'
export const PITR_BACKUP_SCHEDULE = 'plinth.pitr-backup'

/** What proving a pgBackRest backup by restoring it answers (`verifyByRestore`). */
export type RestoreCheck = () => Promise<{ ok: boolean; checks: VerificationCheck[]; restoreMs: number }>

/**
 * The pgBackRest backup job: full on Sundays (UTC) or when asked, differential otherwise, then
 * `pgbackrest verify` and, with `restoreCheck`, a real restore into a scratch cluster that is
 * started and read back (pitr-scratch.ts); a failed verification fails the job (retried, then
 * dead-lettered) and counts in `plinth_backup_verification_failures_total{kind="pgbackrest"}`.
 */
export function pitrBackupJob(
  pitr: () => Pitr,
  metrics: BackupMetrics | undefined,
  options: { now?: () => Date; restoreCheck?: RestoreCheck | undefined } = {},
) {
  const now = options.now ?? (() => new Date())
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
      const restored = verified.ok ? await options.restoreCheck?.() : undefined
      metrics?.verified('pgbackrest', verified.ok && (restored?.ok ?? true))
      if (!verified.ok)
        throw new Error(`pgbackrest verify failed after backup ${backup.label}: ${verified.detail}`)
      if (restored && !restored.ok)
        throw new Error(
          `restoring backup ${backup.label} into a scratch cluster failed: ${restored.checks
            .filter((c) => !c.ok)
            .map((c) => `${c.name}: ${c.detail}`)
            .join('; ')}`,
        )
      job.logger.info(
        { label: backup.label, type, restoreMs: restored?.restoreMs },
        'scheduled pgBackRest backup done',
      )
      return {
        label: backup.label,
        type,
        sizeBytes: backup.sizeBytes,
        restore: restored ? { ok: restored.ok, ms: restored.restoreMs, checks: restored.checks } : null,
      }
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
