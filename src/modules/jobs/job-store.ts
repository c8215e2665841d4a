import { type Kysely, sql } from 'kysely'
import type { JobFilter, JobState, JobView } from '../../core/jobs.ts'
import type { PlinthTables } from '../../infra/db/tables.ts'
import { PlinthError } from '../../shared/errors.ts'
import type { QueueDepth } from './jobs-metrics.ts'

/** The prefix of pg-boss' internal queues, never listed as jobs. */
export const INTERNAL_QUEUE_PREFIX = '__pgboss__'

/**
 * The one adapter over pg-boss' own tables: the reads pg-boss has no API for (listing across
 * queues, counts capped for backpressure, row locks for the commands, queue depths for metrics,
 * the search of payloads for privacy). Nothing else in Plinth writes SQL against `plinth_jobs`.
 * These queries depend on pg-boss' internal schema, so the engine checks at start that the
 * installed schema is the version they were written for (`assertSchemaVersion`).
 */

/** The schema pg-boss keeps its tables in. */
export const JOBS_SCHEMA = 'plinth_jobs'

/**
 * The pg-boss schema version (its package.json `pgboss.schema`; pg-boss 12.35.0) that the queries
 * of this file were written against. When pg-boss is upgraded, check its migrations against these
 * queries, then raise this number.
 */
export const PG_BOSS_SCHEMA_VERSION = 43

export { JOB_STATES, type JobFilter, type JobState, type JobView } from '../../core/jobs.ts'

interface JobRow {
  id: string
  name: string
  state: JobState
  data: { payload?: unknown; meta?: { requestId?: string; scheduleId?: string; key?: string } } | null
  priority: number
  retry_count: number
  retry_limit: number
  output: unknown
  source_name: string | null
  source_id: string | null
  created_on: Date
  start_after: Date
  started_on: Date | null
  completed_on: Date | null
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i
const iso = (d: Date | null) => (d ? new Date(d).toISOString() : null)

function errorText(output: unknown): string | null {
  if (output === null || output === undefined) return null
  if (typeof output === 'string') return output
  if (typeof output === 'object' && 'message' in output && typeof output.message === 'string')
    return output.message
  return JSON.stringify(output)
}

function toView(row: JobRow): JobView {
  const meta = row.data?.meta ?? {}
  const failedish = row.state === 'failed' || row.state === 'retry'
  return {
    id: row.id,
    name: row.name,
    state: row.state,
    payload: row.data?.payload ?? row.data ?? null,
    priority: row.priority,
    attempts: row.started_on ? row.retry_count + 1 : row.retry_count,
    retryLimit: row.retry_limit,
    requestId: meta.requestId ?? null,
    scheduleId: meta.scheduleId ?? null,
    lastError: failedish ? errorText(row.output) : null,
    output: row.state === 'completed' ? (row.output ?? null) : null,
    idempotencyKey: meta.key ?? null,
    source: row.source_name && row.source_id ? { name: row.source_name, id: row.source_id } : null,
    createdAt: iso(row.created_on) as string,
    runAfter: iso(row.start_after) as string,
    startedAt: iso(row.started_on),
    completedAt: iso(row.completed_on),
  }
}

const COLUMNS = sql.raw(
  'id, name, state::text as state, data, priority, retry_count, retry_limit, output, source_name, source_id, created_on, start_after, started_on, completed_on',
)
const JOB_TABLE = sql.raw(`${JOBS_SCHEMA}.job`)

function decodeCursor(cursor: string): { at: Date; id: string } {
  const [at, id] = Buffer.from(cursor, 'base64url').toString('utf8').split('|')
  const date = new Date(at ?? '')
  if (!id || !UUID.test(id) || Number.isNaN(date.getTime()))
    throw new PlinthError('PLINTH_HTTP_INVALID_REQUEST', 'The cursor is not one this API returned.', {
      errors: [{ in: 'querystring', field: 'cursor', message: 'is invalid' }],
    })
  return { at: date, id }
}

const encodeCursor = (row: JobRow) =>
  Buffer.from(`${new Date(row.created_on).toISOString()}|${row.id}`).toString('base64url')

const escapeLike = (s: string) => s.replace(/[\\%_]/g, '\\$&')

/**
 * Jobs whose payload or result names the person (their id, or their address as JSON text). Job
 * types are free to carry anything, so the engine's table is searched rather than declared column
 * by column.
 */
function naming(subject: { userId: string; email: string }) {
  const id = `%${escapeLike(subject.userId)}%`
  const email = `%${escapeLike(JSON.stringify(subject.email).slice(1, -1))}%`
  return sql`(data::text like ${id} or data::text ilike ${email}
    or output::text like ${id} or output::text ilike ${email})`
}

async function engineInstalled(db: Kysely<PlinthTables>): Promise<boolean> {
  const { rows } = await sql<{
    t: string | null
  }>`select to_regclass(${`${JOBS_SCHEMA}.job`})::text as t`.execute(db)
  return rows[0]?.t != null
}

/** Jobs naming a person, for the privacy export (none before the engine installed its tables). */
export async function jobsNaming(
  db: Kysely<PlinthTables>,
  subject: { userId: string; email: string },
): Promise<Record<string, unknown>[]> {
  if (!(await engineInstalled(db))) return []
  const { rows } = await sql<Record<string, unknown>>`select id, name, state, created_on, completed_on,
    data, output from ${JOB_TABLE} where ${naming(subject)} order by created_on`.execute(db)
  return rows
}

/** Deletes the jobs naming a person (erasure), whatever their state; returns how many. */
export async function deleteJobsNaming(
  trx: Kysely<PlinthTables>,
  subject: { userId: string; email: string },
): Promise<number> {
  if (!(await engineInstalled(trx))) return 0
  const result = await sql`delete from ${JOB_TABLE} where ${naming(subject)}`.execute(trx)
  return Number(result.numAffectedRows ?? 0)
}

/**
 * Throws, naming both versions and what to do, unless pg-boss' installed schema (its `version`
 * table) is the one this file was written for. The engine calls it at start, after pg-boss
 * installed or migrated its schema: a newer pg-boss (or a replica on a newer release that migrated
 * the schema) must stop the boot instead of letting these queries misread its tables.
 */
export async function assertSchemaVersion(
  kysely: Kysely<PlinthTables>,
  expected: number = PG_BOSS_SCHEMA_VERSION,
): Promise<void> {
  const { rows } = await sql<{ version: string | number }>`select version from ${sql.raw(
    JOBS_SCHEMA,
  )}.version`.execute(kysely)
  const found = rows[0] ? Number(rows[0].version) : null
  if (found !== expected)
    throw new Error(
      `The job engine's schema "${JOBS_SCHEMA}" is pg-boss schema version ${found ?? 'none'}, but Plinth's ` +
        `reads of its tables (src/modules/jobs/job-store.ts) were written for version ${expected}. ` +
        'Run the pg-boss release pinned in package-lock.json (npm ci) on every replica, or, after ' +
        "checking pg-boss' migrations against job-store.ts, raise PG_BOSS_SCHEMA_VERSION.",
    )
}

/** Reads of the engine's job table (pg-boss has no listing across queues). */
export function createJobStore(kysely: Kysely<PlinthTables>) {
  return {
    /** See `assertSchemaVersion`. */
    assertSchemaVersion(): Promise<void> {
      return assertSchemaVersion(kysely)
    },

    async get(id: string): Promise<JobView | undefined> {
      if (!UUID.test(id)) return undefined
      const { rows } = await sql<JobRow>`select ${COLUMNS} from ${JOB_TABLE} where id = ${id}::uuid`.execute(
        kysely,
      )
      return rows[0] ? toView(rows[0]) : undefined
    },

    async list(filter: JobFilter): Promise<{ items: JobView[]; nextCursor: string | null }> {
      const limit = Math.min(Math.max(filter.limit ?? 50, 1), 200)
      // pg-boss' own queues (`__pgboss__send-it`, cron and maintenance) are the engine's, not jobs.
      const where = [sql`left(name, ${INTERNAL_QUEUE_PREFIX.length}) <> ${INTERNAL_QUEUE_PREFIX}`]
      if (filter.name) where.push(sql`name = ${filter.name}`)
      if (filter.state) where.push(sql`state = ${filter.state}::${sql.raw(JOBS_SCHEMA)}.job_state`)
      if (filter.from) where.push(sql`created_on >= ${filter.from}`)
      if (filter.to) where.push(sql`created_on < ${filter.to}`)
      if (filter.cursor) {
        const c = decodeCursor(filter.cursor)
        where.push(sql`(created_on, id) < (${c.at}, ${c.id}::uuid)`)
      }
      const { rows } = await sql<JobRow>`select ${COLUMNS} from ${JOB_TABLE}
        where ${sql.join(where, sql` and `)}
        order by created_on desc, id desc limit ${limit + 1}`.execute(kysely)
      const page = rows.slice(0, limit)
      const last = page.at(-1)
      return { items: page.map(toView), nextCursor: rows.length > limit && last ? encodeCursor(last) : null }
    },

    /** Waiting jobs per queue, capped at `cap` (a backpressure check needs no exact figure above it). */
    async waiting(name: string, cap: number, executor: Kysely<PlinthTables> = kysely): Promise<number> {
      const { rows } = await sql<{ n: number }>`select count(*)::int as n from (
          select 1 from ${JOB_TABLE} where name = ${name} and state < 'active' limit ${cap + 1}) w`.execute(
        executor,
      )
      return rows[0]?.n ?? 0
    },

    /** A job's state, its row locked until `trx` ends (workers skip locked rows); undefined when gone. */
    async lockState(trx: Kysely<PlinthTables>, name: string, id: string): Promise<JobState | undefined> {
      const { rows } = await sql<{ state: JobState }>`select state::text as state from ${JOB_TABLE}
        where name = ${name} and id = ${id}::uuid for update`.execute(trx)
      return rows[0]?.state
    },

    /** Up to `limit` ids of a queue's jobs (any state), in id order after `after`. */
    async ids(
      name: string,
      page: { limit: number; after?: string | undefined },
      executor: Kysely<PlinthTables> = kysely,
    ): Promise<string[]> {
      const { rows } = await sql<{ id: string }>`select id from ${JOB_TABLE} where name = ${name}
        ${page.after ? sql`and id > ${page.after}::uuid` : sql``} order by id limit ${page.limit}`.execute(
        executor,
      )
      return rows.map((r) => r.id)
    },

    /** Depth and age of the oldest runnable job of each queue, for the metrics. */
    async depths(): Promise<QueueDepth[]> {
      const { rows } = await sql<{ name: string; waiting: number; oldest: number | null }>`
        select q.name,
          (select count(*)::int from ${JOB_TABLE} j where j.name = q.name and j.state < 'active') as waiting,
          (select extract(epoch from now() - min(j.start_after))::float8 from ${JOB_TABLE} j
            where j.name = q.name and j.state < 'active' and j.start_after <= now()) as oldest
        from ${sql.raw(JOBS_SCHEMA)}.queue q where q.name not like '\\_\\_%'`.execute(kysely)
      return rows.map((r) => ({
        name: r.name,
        waiting: r.waiting,
        oldestAgeSeconds: Math.max(0, r.oldest ?? 0),
      }))
    },
  }
}

export type JobStore = ReturnType<typeof createJobStore>
