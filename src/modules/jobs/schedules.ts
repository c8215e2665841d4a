import { randomUUID } from 'node:crypto'
import type { Selectable, Transaction } from 'kysely'
import type { Logger } from 'pino'
import { type Audit, type AuditCaller, type AuditEntry, auditDiff, callerEntry } from '../../core/audit.ts'
import type { ScheduleInput, Schedules, ScheduleView } from '../../core/jobs.ts'
import type { Database } from '../../infra/db/create-db.ts'
import type { PlinthTables } from '../../infra/db/tables.ts'
import { PlinthError } from '../../shared/errors.ts'
import type { JobEnvelope, PgBossJobEngine } from './job-engine.ts'
import type { JobSchedulesTable } from './jobs.tables.ts'

export type { ScheduleInput, Schedules, ScheduleView } from '../../core/jobs.ts'

type Row = Selectable<JobSchedulesTable>
/** What pg-boss' copy of a schedule is made of. */
type Armed = Pick<Row, 'id' | 'job_name' | 'cron' | 'timezone' | 'payload' | 'missed'>

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

  async function arm(row: Armed): Promise<void> {
    const data: JobEnvelope = { payload: row.payload, meta: { scheduleId: row.id } }
    await jobs.boss.schedule(row.job_name, row.cron, data as object, {
      tz: row.timezone,
      key: row.id,
      missed: row.missed,
    })
  }

  async function disarm(row: Armed): Promise<void> {
    await jobs.boss.unschedule(row.job_name, row.id)
  }

  /** Makes pg-boss' copy of one schedule match Plinth's row (armed while the row exists and is active). */
  async function resync(id: string, jobName: string): Promise<void> {
    const row = await db.kysely
      .selectFrom('job_schedules')
      .selectAll()
      .where('id', '=', id)
      .executeTakeFirst()
    if (row && !row.paused && jobs.has(row.job_name)) await arm(row)
    else if (!row || row.paused) await jobs.boss.unschedule(jobName, id)
  }

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

  /**
   * Sets pg-boss' copy with `copy`, then runs `change` (the row and its audit row) in a transaction;
   * if that fails, puts the copy back to match the row and rethrows.
   */
  async function copyThenRow<T>(
    row: { id: string; jobName: string },
    copy: () => Promise<void>,
    change: (trx: Transaction<PlinthTables>) => Promise<T>,
  ): Promise<T> {
    await copy()
    try {
      return await db.kysely.transaction().execute(change)
    } catch (err) {
      await resync(row.id, row.jobName).catch((undoErr: unknown) =>
        deps.logger?.warn(
          { err: undoErr, scheduleId: row.id },
          'schedule copy not put back after a failed change; the next worker start reconciles it',
        ),
      )
      throw err
    }
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
     * Makes pg-boss' copies match Plinth's table: every active schedule armed (with its current
     * cron, zone and payload), no copy left for a paused or deleted one. Returns what it changed.
     */
    async reconcile(): Promise<{ armed: number; removed: number }> {
      const rows = await db.kysely.selectFrom('job_schedules').selectAll().execute()
      const known = new Map(rows.map((r) => [r.id, r]))
      let armed = 0
      let removed = 0
      for (const row of rows) {
        if (row.paused || !jobs.has(row.job_name)) continue
        await arm(row)
        armed++
      }
      for (const copy of await jobs.boss.getSchedules()) {
        const row = known.get(copy.key)
        const ours = jobs.has(copy.name) || row !== undefined
        if (ours && (!row || row.paused)) {
          await jobs.boss.unschedule(copy.name, copy.key)
          removed++
        }
      }
      return { armed, removed }
    },

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
