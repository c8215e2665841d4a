import { Type } from 'typebox'
import { defineJob } from '../../core/jobs.ts'
import type { Retention } from '../../core/retention.ts'

export const RETENTION_JOB = 'plinth.retention'
/** The fixed id of the built-in retention schedule (cron `PLINTH_RETENTION_CRON`). */
export const RETENTION_SCHEDULE = 'plinth.retention'

/**
 * The built-in retention job: runs every module's retention rules (expired sessions and single-use
 * tokens, old e-mail, webhook deliveries and audit rows) once. A rule that fails fails the job, after
 * the other rules ran; the retry runs them all again, which is harmless (they delete what is old).
 * The timeout is long because a first run may meet a large backlog; each batch commits on its own,
 * so a run cut short keeps what it deleted and the next one goes on.
 */
export function retentionJob(retention: Retention) {
  return defineJob({
    name: RETENTION_JOB,
    description:
      'Deletes expired sessions, tokens, old e-mail, webhook deliveries and audit rows (docs/operations/retention.md).',
    payload: Type.Object({}, { additionalProperties: false }),
    policy: { concurrency: 1, retryLimit: 2, retryDelay: 300, timeout: 3600, deadLetter: false },
    async handler(job) {
      const report = await retention.run({
        signal: job.signal,
        trigger: job.scheduleId ? 'schedule' : 'job',
        logger: job.logger,
      })
      const failed = report.results.filter((r) => r.error !== undefined)
      if (failed.length > 0)
        throw new Error(`retention failed for ${failed.map((r) => `${r.rule} (${r.error})`).join(', ')}`)
      return {
        deleted: report.deleted,
        counts: Object.fromEntries(report.results.map((r) => [r.rule, r.deleted])),
      }
    },
  })
}
