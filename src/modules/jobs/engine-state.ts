import { CompiledQuery, type Kysely } from 'kysely'
import type { Db, PgBoss } from 'pg-boss'
import type { Logger } from 'pino'
import type { PlinthConfig } from '../../config/config.schema.ts'
import { type Audit, type AuditCaller, type AuditEntry, callerEntry } from '../../core/audit.ts'
import type { JobDefinition, ResolvedPolicy } from '../../core/jobs.ts'
import type { Database } from '../../infra/db/create-db.ts'
import type { PlinthTables } from '../../infra/db/tables.ts'
import type { ErrorReports } from '../../observability/error-reports.ts'
import { PlinthError } from '../../shared/errors.ts'
import type { createStrictAjv } from '../../shared/validation.ts'
import type { JobStore } from './job-store.ts'
import type { JobsMetrics } from './jobs-metrics.ts'

/** What Plinth stores as a pg-boss job's data: the payload, and where the job came from. */
export interface JobEnvelope {
  readonly payload: unknown
  readonly meta: {
    readonly requestId?: string
    readonly scheduleId?: string
    readonly key?: string
    /** The W3C trace context of the code that enqueued the job, when tracing was on: its attempts continue that trace. */
    readonly traceparent?: string
  }
}

/** A registered job type. */
export interface Registered {
  readonly definition: JobDefinition
  readonly policy: ResolvedPolicy
  readonly validate: ReturnType<ReturnType<typeof createStrictAjv>['compile']>
  /** Cached waiting count for backpressure. */
  depth: { count: number; at: number; refreshing?: Promise<number> | undefined }
}

export const NIL_UUID = '00000000-0000-0000-0000-000000000000'

/**
 * What the parts of the job engine share (enqueue, workers, reads, commands): the registry of job
 * types and the pg-boss instance once the engine started. Only the lifecycle (job-engine.ts) sets
 * `boss` and `running`.
 */
export interface EngineState {
  readonly config: PlinthConfig
  readonly db: Database
  readonly log: Logger
  readonly store: JobStore
  readonly m: JobsMetrics
  readonly registry: Map<string, Registered>
  /** Records administrators' actions (enqueue, retry, cancel, purge, redrive) when they pass a caller. */
  readonly audit: Pick<Audit, 'record'> | undefined
  /** Jobs that failed their last attempt are reported here. */
  readonly errorReports?: ErrorReports | undefined
  boss: PgBoss | undefined
  running: boolean
}

/** An IDatabase for pg-boss over a Kysely connection or transaction. */
export function bossDb(kysely: Kysely<PlinthTables>): Db {
  return {
    async executeSql(text: string, values?: unknown[]) {
      const result = await kysely.executeQuery(CompiledQuery.raw(text, values ?? []))
      return { rows: result.rows as unknown[] }
    },
  }
}

export function requireBoss(s: EngineState): PgBoss {
  if (!s.boss || !s.running) throw new PlinthError('PLINTH_JOBS_UNAVAILABLE')
  return s.boss
}

export function registered(s: EngineState, name: string): Registered {
  const r = s.registry.get(name)
  if (!r) throw new PlinthError('PLINTH_JOB_TYPE_UNKNOWN', `No job type "${name}" is registered.`)
  return r
}

/** Records an administrator's action in `trx`; nothing for internal callers (no caller). */
export async function audited(
  s: EngineState,
  trx: Kysely<PlinthTables>,
  by: AuditCaller | undefined,
  action: string,
  target: AuditEntry['target'],
  details: Record<string, unknown>,
): Promise<void> {
  if (!by) return
  if (!s.audit) throw new Error('the job engine was created without an audit log')
  await s.audit.record(trx, callerEntry(by, action, target, { details }))
}
