import { randomUUID } from 'node:crypto'
import type { Selectable } from 'kysely'
import { PlinthError } from '../../core/errors.ts'
import type { Database } from '../../infra/db/create-db.ts'
import type { JobEngine, JobEnvelope } from './job-engine.ts'
import type { JobSchedulesTable, MissedPolicy } from './jobs.tables.ts'

export interface ScheduleInput {
  readonly jobName: string
  /** 5 fields (minute…weekday) or 6 (second first). */
  readonly cron: string
  /** IANA time zone the expression is read in (default UTC). */
  readonly timezone?: string | undefined
  readonly payload?: unknown
  /** Ticks missed while no worker ran: `skip` them, or run `once` for the latest (default skip). */
  readonly missed?: MissedPolicy | undefined
  readonly description?: string | undefined
}

export interface ScheduleView {
  readonly id: string
  readonly jobName: string
  readonly cron: string
  readonly timezone: string
  readonly payload: unknown
  readonly missed: MissedPolicy
  readonly paused: boolean
  readonly description: string | null
  readonly builtin: boolean
  readonly createdBy: string | null
  readonly createdAt: string
  readonly updatedAt: string
  /** The next few ticks (none while paused). */
  readonly nextRuns: string[]
}

type Row = Selectable<JobSchedulesTable>

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
 * pg-boss writes its copy on its own connection, so the two writes cannot share a transaction:
 * Plinth's row is written first and undone if the copy fails, and `reconcile()` (run by every
 * worker at start) repairs any drift a crash between the two left behind.
 */
export function createSchedules(deps: { db: Database; jobs: JobEngine }) {
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

  async function arm(row: Row): Promise<void> {
    const data: JobEnvelope = { payload: row.payload, meta: { scheduleId: row.id } }
    await jobs.boss.schedule(row.job_name, row.cron, data as object, {
      tz: row.timezone,
      key: row.id,
      missed: row.missed,
    })
  }

  async function disarm(row: Row): Promise<void> {
    await jobs.boss.unschedule(row.job_name, row.id)
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
    async create(input: ScheduleInput, by?: { createdBy?: string; id?: string; builtin?: boolean }) {
      validate(input, input.jobName)
      const payload = input.payload ?? {}
      validatePayload(input.jobName, payload)
      const row = await db.kysely
        .insertInto('job_schedules')
        .values({
          id: by?.id ?? randomUUID(),
          job_name: input.jobName,
          cron: input.cron.trim(),
          timezone: input.timezone ?? 'UTC',
          payload: JSON.stringify(payload),
          missed: input.missed ?? 'skip',
          description: input.description ?? null,
          builtin: by?.builtin ?? false,
          created_by: by?.createdBy ?? null,
        })
        .returningAll()
        .executeTakeFirstOrThrow()
      try {
        await arm(row)
      } catch (err) {
        await db.kysely.deleteFrom('job_schedules').where('id', '=', row.id).execute()
        throw err
      }
      jobs.metrics.schedulesCreated.inc({ name: row.job_name })
      return view(row)
    },

    async update(id: string, patch: Partial<Omit<ScheduleInput, 'jobName'>>): Promise<ScheduleView> {
      const current = await load(id)
      const next = {
        cron: patch.cron?.trim() ?? current.cron,
        timezone: patch.timezone ?? current.timezone,
        missed: patch.missed ?? current.missed,
      }
      validate(next, current.job_name)
      if (patch.payload !== undefined) validatePayload(current.job_name, patch.payload)
      const updated = await db.kysely
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
      if (!updated.paused) await arm(updated)
      return view(updated)
    },

    async setPaused(id: string, paused: boolean): Promise<ScheduleView> {
      const current = await load(id)
      if (current.paused === paused) return view(current)
      const updated = await db.kysely
        .updateTable('job_schedules')
        .set({ paused, updated_at: new Date() })
        .where('id', '=', id)
        .returningAll()
        .executeTakeFirstOrThrow()
      if (paused) await disarm(updated)
      else await arm(updated)
      return view(updated)
    },

    async remove(id: string): Promise<void> {
      const current = await load(id)
      await disarm(current)
      await db.kysely.deleteFrom('job_schedules').where('id', '=', id).execute()
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
          await this.create(input, { id, builtin: true })
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

export type Schedules = ReturnType<typeof createSchedules>
