import { isDeepStrictEqual } from 'node:util'
import type { Selectable, Transaction } from 'kysely'
import type { Logger } from 'pino'
import type { Database } from '../../infra/db/create-db.ts'
import type { PlinthTables } from '../../infra/db/tables.ts'
import type { JobEnvelope, PgBossJobEngine } from './job-engine.ts'
import type { JobSchedulesTable } from './jobs.tables.ts'

type Row = Selectable<JobSchedulesTable>
/** What pg-boss' copy of a schedule is made of. */
export type Armed = Pick<Row, 'id' | 'job_name' | 'cron' | 'timezone' | 'payload' | 'missed'>

/**
 * pg-boss' copies of the schedules (see `createSchedules` for why there are two): arming and
 * disarming one, a change that sets the copy first and puts it back when the row's transaction
 * fails, and the reconciliation every worker runs at start.
 */
export function createScheduleCopies(deps: {
  db: Database
  jobs: PgBossJobEngine
  logger?: Logger | undefined
}) {
  const { db, jobs } = deps

  const copyData = (row: Armed): JobEnvelope => ({ payload: row.payload, meta: { scheduleId: row.id } })
  const copyOptions = (row: Armed) => ({ tz: row.timezone, key: row.id, missed: row.missed })

  async function arm(row: Armed): Promise<void> {
    await jobs.boss.schedule(row.job_name, row.cron, copyData(row) as object, copyOptions(row))
  }

  /** Whether pg-boss' copy is what `arm(row)` would write. */
  function matches(
    copy: { cron: string; timezone: string; data?: unknown; options?: unknown } | undefined,
    row: Armed,
  ): boolean {
    return (
      copy !== undefined &&
      copy.cron === row.cron &&
      copy.timezone === (row.timezone || 'UTC') &&
      isDeepStrictEqual(copy.data ?? null, JSON.parse(JSON.stringify(copyData(row)))) &&
      isDeepStrictEqual(copy.options ?? null, JSON.parse(JSON.stringify(copyOptions(row))))
    )
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

  /**
   * Makes pg-boss' copies match Plinth's table: every active schedule armed (with its current
   * cron, zone and payload), no copy left for a paused or deleted one. Returns what it changed.
   */
  async function reconcile(): Promise<{ armed: number; removed: number }> {
    const [rows, copies] = await Promise.all([
      db.kysely.selectFrom('job_schedules').selectAll().execute(),
      jobs.boss.getSchedules(),
    ])
    const known = new Map(rows.map((r) => [r.id, r]))
    const copyOf = new Map(copies.map((c) => [`${c.name}\0${c.key}`, c]))
    let armed = 0
    let removed = 0
    for (const row of rows) {
      if (row.paused || !jobs.has(row.job_name)) continue
      // A copy that already matches is left as it is: a restart writes nothing.
      if (matches(copyOf.get(`${row.job_name}\0${row.id}`), row)) continue
      await arm(row)
      armed++
    }
    for (const copy of copies) {
      const row = known.get(copy.key)
      const ours = jobs.has(copy.name) || row !== undefined
      if (ours && (!row || row.paused)) {
        await jobs.boss.unschedule(copy.name, copy.key)
        removed++
      }
    }
    return { armed, removed }
  }

  return { arm, disarm, copyThenRow, reconcile }
}
