import { randomUUID } from 'node:crypto'
import type { Selectable, Transaction } from 'kysely'
import type { Logger } from 'pino'
import { type Audit, type AuditCaller, type AuditEntry, auditDiff, callerEntry } from '../../core/audit.ts'
import type { ScheduleInput, Schedules, ScheduleView } from '../../core/jobs.ts'
import type { Database } from '../../infra/db/create-db.ts'
import type { PlinthTables } from '../../infra/db/tables.ts'
import { PlinthError } from '../../shared/errors.ts'
import type { PgBossJobEngine } from './job-engine.ts'
import type { JobSchedulesTable } from './jobs.tables.ts'
import { type Armed, createScheduleCopies } from './schedule-copies.ts'
import { createScheduleValidation } from './schedule-validation.ts'

export type { ScheduleInput, Schedules, ScheduleView } from '../../core/jobs.ts'

type Row = Selectable<JobSchedulesTable>

/** What the audit log keeps of a schedule (secrets in its payload are masked by key when recorded). */
const audited = (row: Row) => ({
  jobName: row.job_name,
  cron: row.cron,
  timezone: row.timezone,
  payload: row.payload,
  missed: row.missed,
  paused: row.paused,
  description: row.description,
})

/**
 * Cron schedules. Plinth's `job_schedules` table is the source of truth; pg-boss holds a copy of
 * each active one (keyed by the schedule id) and fires it: its cron pass takes a lock and files
 * each tick under a per-tick singleton key, so with any number of replicas a tick fires once.
 * Pausing removes the pg-boss copy; resuming puts it back.
 *
 * pg-boss writes its copy on its own connection, so the copy cannot share the transaction of
 * Plinth's row. Each change sets the copy first, then writes the row and, for an administrator's
 * change (a caller is given), its audit row in one transaction; when that transaction fails, the
 * copy is put back to match the row. `reconcile()` (run by every worker at start) repairs any
 * drift a crash between the two left behind. So the table and the audit log always agree; the
 * copy may differ from them for the moment between the two writes.
 */
export function createSchedules(deps: {
  db: Database
  jobs: PgBossJobEngine
  /** Records administrators' changes (a caller given) in the transaction of the change. */
  audit?: Pick<Audit, 'record'> | undefined
  logger?: Logger | undefined
}): Schedules {
  const { db, jobs } = deps
  const { validate, validatePayload } = createScheduleValidation(jobs)
  const { arm, disarm, copyThenRow, reconcile } = createScheduleCopies(deps)

  function nextRuns(row: Row): string[] {
    if (row.paused) return []
    try {
      return jobs.boss.previewSchedule(row.cron, { tz: row.timezone, count: 3 }).map((d) => d.toISOString())
    } catch {
      return []
    }
  }

  const view = (row: Row): ScheduleView => ({
    id: row.id,
    jobName: row.job_name,
    cron: row.cron,
    timezone: row.timezone,
    payload: row.payload,
    missed: row.missed,
    paused: row.paused,
    description: row.description,
    builtin: row.builtin,
    createdBy: row.created_by,
    createdAt: new Date(row.created_at).toISOString(),
    updatedAt: new Date(row.updated_at).toISOString(),
    nextRuns: nextRuns(row),
  })

  async function record(
    trx: Transaction<PlinthTables>,
    by: AuditCaller | undefined,
    action: string,
    id: string,
    rest: Pick<AuditEntry, 'details' | 'changes'>,
  ): Promise<void> {
    if (!by) return
    if (!deps.audit) throw new Error('schedules were created without an audit log')
    await deps.audit.record(trx, callerEntry(by, action, { type: 'schedule', id }, rest))
  }

  async function load(id: string): Promise<Row> {
    const row = await db.kysely
      .selectFrom('job_schedules')
      .selectAll()
      .where('id', '=', id)
      .executeTakeFirst()
    if (!row) throw new PlinthError('PLINTH_SCHEDULE_NOT_FOUND')
    return row
  }

  return {
    /**
     * Creates a schedule. `by` is the administrator who asks (HTTP, CLI): `schedule:created` is
     * recorded with the row. `internal` is for built-in schedules, created under a fixed id.
     */
    async create(
      input: ScheduleInput,
      by?: AuditCaller,
      internal: { id?: string; builtin?: boolean } = {},
    ): Promise<ScheduleView> {
      validate(input, input.jobName)
      const payload = input.payload ?? {}
      validatePayload(input.jobName, payload)
      const armed: Armed = {
        id: internal.id ?? randomUUID(),
        job_name: input.jobName,
        cron: input.cron.trim(),
        timezone: input.timezone ?? 'UTC',
        payload,
        missed: input.missed ?? 'skip',
      }
      const row = await copyThenRow(
        { id: armed.id, jobName: armed.job_name },
        () => arm(armed),
        async (trx) => {
          const row = await trx
            .insertInto('job_schedules')
            .values({
              ...armed,
              payload: JSON.stringify(payload),
              description: input.description ?? null,
              builtin: internal.builtin ?? false,
              created_by: by?.actor.id ?? null,
            })
            .returningAll()
            .executeTakeFirstOrThrow()
          await record(trx, by, 'schedule:created', row.id, { details: audited(row) })
          return row
        },
      )
      jobs.metrics.schedulesCreated.inc({ name: row.job_name })
      return view(row)
    },

    /** Changes a schedule; with a caller, `schedule:updated` is recorded with what changed, before and after. */
    async update(
      id: string,
      patch: Partial<Omit<ScheduleInput, 'jobName'>>,
      by?: AuditCaller,
    ): Promise<ScheduleView> {
      const current = await load(id)
      const next = {
        cron: patch.cron?.trim() ?? current.cron,
        timezone: patch.timezone ?? current.timezone,
        missed: patch.missed ?? current.missed,
      }
      validate(next, current.job_name)
      if (patch.payload !== undefined) validatePayload(current.job_name, patch.payload)
      const updated = await copyThenRow(
        { id, jobName: current.job_name },
        async () => {
          if (!current.paused) await arm({ ...current, ...next, payload: patch.payload ?? current.payload })
        },
        async (trx) => {
          const before = await trx
            .selectFrom('job_schedules')
            .selectAll()
            .where('id', '=', id)
            .forUpdate()
            .executeTakeFirst()
          if (!before) throw new PlinthError('PLINTH_SCHEDULE_NOT_FOUND')
          const after = await trx
            .updateTable('job_schedules')
            .set({
              ...next,
              ...(patch.payload !== undefined ? { payload: JSON.stringify(patch.payload) } : {}),
              ...(patch.description !== undefined ? { description: patch.description } : {}),
              updated_at: new Date(),
            })
            .where('id', '=', id)
            .returningAll()
            .executeTakeFirstOrThrow()
          const changes = auditDiff(audited(before), audited(after))
          if (changes) await record(trx, by, 'schedule:updated', id, { changes })
          return after
        },
      )
      return view(updated)
    },

    /** Pauses or resumes a schedule; with a caller, records `schedule:paused` or `schedule:resumed`. */
    async setPaused(id: string, paused: boolean, by?: AuditCaller): Promise<ScheduleView> {
      const current = await load(id)
      if (current.paused === paused) return view(current)
      const updated = await copyThenRow(
        { id, jobName: current.job_name },
        () => (paused ? disarm(current) : arm(current)),
        async (trx) => {
          const row = await trx
            .updateTable('job_schedules')
            .set({ paused, updated_at: new Date() })
            .where('id', '=', id)
            .returningAll()
            .executeTakeFirst()
          if (!row) throw new PlinthError('PLINTH_SCHEDULE_NOT_FOUND')
          await record(trx, by, paused ? 'schedule:paused' : 'schedule:resumed', id, {
            changes: auditDiff({ paused: current.paused }, { paused }),
          })
          return row
        },
      )
      return view(updated)
    },

    /** Deletes a schedule; with a caller, records `schedule:deleted` with what it was. */
    async remove(id: string, by?: AuditCaller): Promise<void> {
      const current = await load(id)
      await copyThenRow(
        { id, jobName: current.job_name },
        () => disarm(current),
        async (trx) => {
          const gone = await trx
            .deleteFrom('job_schedules')
            .where('id', '=', id)
            .returningAll()
            .executeTakeFirst()
          if (!gone) throw new PlinthError('PLINTH_SCHEDULE_NOT_FOUND')
          await record(trx, by, 'schedule:deleted', id, { details: audited(gone) })
        },
      )
    },

    async get(id: string): Promise<ScheduleView> {
      return view(await load(id))
    },

    async list(filter: { jobName?: string | undefined } = {}): Promise<ScheduleView[]> {
      let q = db.kysely.selectFrom('job_schedules').selectAll().orderBy('created_at').orderBy('id')
      if (filter.jobName) q = q.where('job_name', '=', filter.jobName)
      return (await q.execute()).map(view)
    },

    /**
     * Creates a built-in schedule under a fixed id, or brings its cron in line with the config
     * (keeping it paused if an operator paused it). Safe for replicas starting together.
     */
    reconcile,

    /**
     * Creates a built-in schedule under a fixed id, or brings its cron in line with the config
     * (keeping it paused if an operator paused it). Safe for replicas starting together.
     */
    async ensureBuiltin(id: string, input: ScheduleInput): Promise<void> {
      const existing = await db.kysely
        .selectFrom('job_schedules')
        .selectAll()
        .where('id', '=', id)
        .executeTakeFirst()
      if (!existing) {
        try {
          await this.create(input, undefined, { id, builtin: true })
        } catch (err) {
          // another replica created it first
          if (
            !(await db.kysely
              .selectFrom('job_schedules')
              .select('id')
              .where('id', '=', id)
              .executeTakeFirst())
          )
            throw err
        }
        return
      }
      if (existing.cron !== input.cron.trim() || existing.timezone !== (input.timezone ?? 'UTC'))
        await this.update(id, { cron: input.cron, timezone: input.timezone })
    },
  }
}
