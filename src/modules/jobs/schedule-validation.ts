import type { ScheduleInput } from '../../core/jobs.ts'
import { PlinthError } from '../../shared/errors.ts'
import type { PgBossJobEngine } from './job-engine.ts'

function invalid(field: string, message: string): PlinthError {
  return new PlinthError('PLINTH_SCHEDULE_INVALID', `${field} ${message}`, {
    errors: [{ in: 'body', field, message }],
  })
}

function assertTimezone(tz: string): void {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: tz })
  } catch {
    throw invalid('timezone', `"${tz}" is not an IANA time zone (e.g. UTC, Europe/Paris)`)
  }
}

/**
 * What a schedule must be before it is saved: a 5- or 6-field cron expression that fires at most
 * once a minute, an IANA time zone, a registered job type, and a payload its schema accepts.
 */
export function createScheduleValidation(jobs: PgBossJobEngine) {
  function validate(input: Omit<ScheduleInput, 'jobName'>, jobName: string): void {
    const fields = input.cron.trim().split(/\s+/)
    if (fields.length !== 5 && fields.length !== 6)
      throw invalid('cron', `must have 5 or 6 fields, got ${fields.length}`)
    const tz = input.timezone ?? 'UTC'
    assertTimezone(tz)
    let runs: Date[]
    try {
      runs = jobs.boss.previewSchedule(input.cron, { tz, count: 5 })
    } catch (err) {
      throw invalid('cron', `is not a valid cron expression (${(err as Error).message})`)
    }
    // The engine files at most one job per schedule per minute (its exactly-once slot); a seconds
    // field that matches twice a minute would silently fire once.
    for (let i = 1; i < runs.length; i++)
      if ((runs[i] as Date).getTime() - (runs[i - 1] as Date).getTime() < 60_000)
        throw invalid(
          'cron',
          'fires more than once a minute; schedules fire at most once a minute (a 6th field picks the second)',
        )
    const r = jobs.definitions().find((d) => d.definition.name === jobName)
    if (!r) throw new PlinthError('PLINTH_JOB_TYPE_UNKNOWN', `No job type "${jobName}" is registered.`)
  }

  function validatePayload(jobName: string, payload: unknown): void {
    // enqueue's validation, without enqueueing: an invalid payload would fail on every tick
    const probe = jobs.definitions().find((d) => d.definition.name === jobName)
    if (!probe) return
    jobs.validatePayload(jobName, payload)
  }

  return { validate, validatePayload }
}
