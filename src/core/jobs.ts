/**
 * The jobs contract: how a module declares job types (`defineJob`), and the job engine and
 * schedules every module reaches through its context (`ctx.jobs`, `ctx.schedules`). The engine
 * over pg-boss implements it in modules/jobs.
 */
import type { Kysely } from 'kysely'
import type { Logger } from 'pino'
import type { Static, TSchema } from 'typebox'
import type { PlinthTables } from '../infra/db/tables.ts'
import type { AuditCaller } from './audit.ts'

/** What a handler gets for one attempt of one job. */
export interface JobContext<P> {
  readonly id: string
  readonly name: string
  readonly payload: P
  /** 1 for the first attempt, 2 for the first retry… */
  readonly attempt: number
  /** The request id of the HTTP call that enqueued the job (or of the schedule tick), when known. */
  readonly requestId: string | undefined
  /** The schedule that fired this job, when a schedule did. */
  readonly scheduleId: string | undefined
  /**
   * Aborted when the job's timeout passes, when the process shuts down before the handler
   * finished, or when the job's lease was lost. Pass it to fetch, database calls and loops.
   */
  readonly signal: AbortSignal
  /** Carries `jobId`, `job`, `attempt` and `requestId` on every line. */
  readonly logger: Logger
}

/**
 * How a job type runs. Every field has a default (see `resolvePolicy`), so a definition names only
 * what differs.
 */
export interface JobPolicy {
  /** Jobs of this type one worker process runs at once (default `PLINTH_JOBS_CONCURRENCY`). */
  readonly concurrency?: number
  /** Default priority of new jobs; higher runs first (default 0). */
  readonly priority?: number
  /** Retries after the first attempt fails (default 3). */
  readonly retryLimit?: number
  /** Seconds before the first retry; doubled each retry with jitter when `backoff` (default 5). */
  readonly retryDelay?: number
  /** Exponential backoff with jitter between retries (default true). */
  readonly backoff?: boolean
  /** Longest wait between retries in seconds (default 3600). */
  readonly retryDelayMax?: number
  /** Seconds an attempt may run; then its signal aborts and it counts as failed (default 300). */
  readonly timeout?: number
  /** Keep jobs that failed every attempt in the `<name>.dead` queue (default true). */
  readonly deadLetter?: boolean
  /** Seconds a completed or failed job is kept for inspection (default 7 days). */
  readonly retention?: number
  /** Backpressure: waiting jobs above which enqueue is refused (default `PLINTH_JOBS_MAX_QUEUED`). */
  readonly maxQueued?: number
}

export interface JobDefinition<S extends TSchema = TSchema> {
  /** `noun.verb`-style name: lowercase letters, digits, `.`, `-` and `_`; also the queue's name. */
  readonly name: string
  readonly description?: string
  /**
   * TypeBox schema of the payload; enqueue refuses a payload that does not match it. Its validator
   * compiles at the first enqueue, which refuses a schema whose keyword values are wrong (e.g. a
   * negative `minLength`); a schema not wholly built by TypeBox (hand-written parts, `Type.Unsafe`)
   * is also checked against JSON Schema's meta-schema when the job type registers.
   */
  readonly payload: S
  readonly policy?: JobPolicy
  /**
   * Runs one attempt. Throwing (or rejecting) fails the attempt, which is retried per the policy.
   * Jobs are delivered at least once: a handler must be safe to run again for the same job id.
   */
  handler(job: JobContext<Static<S>>): Promise<unknown> | unknown
}

/** A policy with every default filled in. */
export type ResolvedPolicy = { readonly [K in keyof JobPolicy]-?: NonNullable<JobPolicy[K]> }

export const JOB_NAME = /^[a-z][a-z0-9._-]{0,62}$/

/** Where jobs that failed every attempt go. */
export const deadLetterQueue = (name: string) => `${name}.dead`

/**
 * Declares a job type; the payload type flows from the schema into the handler.
 *
 * @example
 * export const thumbnail = defineJob({
 *   name: 'files.thumbnail',
 *   payload: Type.Object({ fileId: Type.String() }),
 *   policy: { concurrency: 4, timeout: 60 },
 *   async handler({ payload, signal }) { … },
 * })
 */
export function defineJob<S extends TSchema>(definition: JobDefinition<S>): JobDefinition<S> {
  if (!JOB_NAME.test(definition.name) || definition.name.endsWith('.dead'))
    throw new Error(
      `Job name "${definition.name}" must be 1-63 lowercase letters, digits, ".", "-" or "_", start with a letter, and not end in ".dead".`,
    )
  return definition
}

export function resolvePolicy(
  policy: JobPolicy | undefined,
  defaults: { concurrency: number; maxQueued: number },
): ResolvedPolicy {
  const p = policy ?? {}
  const resolved: ResolvedPolicy = {
    concurrency: p.concurrency ?? defaults.concurrency,
    priority: p.priority ?? 0,
    retryLimit: p.retryLimit ?? 3,
    retryDelay: p.retryDelay ?? 5,
    backoff: p.backoff ?? true,
    retryDelayMax: p.retryDelayMax ?? 3600,
    timeout: p.timeout ?? 300,
    deadLetter: p.deadLetter ?? true,
    retention: p.retention ?? 7 * 86_400,
    maxQueued: p.maxQueued ?? defaults.maxQueued,
  }
  for (const [key, value] of Object.entries(resolved)) {
    if (typeof value === 'number' && (!Number.isInteger(value) || value < (key === 'priority' ? -1e6 : 0)))
      throw new Error(`Job policy ${key} must be a non-negative integer, got ${value}`)
  }
  if (resolved.concurrency < 1 || resolved.timeout < 1)
    throw new Error('Job policy concurrency and timeout must be at least 1')
  return resolved
}

/** What the job engine runs in this process. */
export type JobsMode = 'worker' | 'client'

export const JOB_STATES = ['created', 'retry', 'active', 'completed', 'cancelled', 'failed'] as const
export type JobState = (typeof JOB_STATES)[number]

/** One job as Plinth shows it (HTTP, CLI). */
export interface JobView {
  readonly id: string
  readonly name: string
  readonly state: JobState
  readonly payload: unknown
  readonly priority: number
  /** Attempts started so far. */
  readonly attempts: number
  /** Retries allowed after the first attempt. */
  readonly retryLimit: number
  readonly requestId: string | null
  readonly scheduleId: string | null
  /** The error of the last failed attempt, while the job is retrying or after it failed. */
  readonly lastError: string | null
  /** What the handler returned, once completed. */
  readonly output: unknown
  readonly idempotencyKey: string | null
  /** For a job in a dead-letter queue: the job it is a copy of. */
  readonly source: { readonly name: string; readonly id: string } | null
  readonly createdAt: string
  readonly runAfter: string
  readonly startedAt: string | null
  readonly completedAt: string | null
}

export interface JobFilter {
  readonly name?: string | undefined
  readonly state?: JobState | undefined
  /** Created at or after. */
  readonly from?: Date | undefined
  /** Created before. */
  readonly to?: Date | undefined
  readonly limit?: number | undefined
  /** The `nextCursor` of the previous page. */
  readonly cursor?: string | undefined
}

export interface EnqueueOptions {
  /** Run no sooner than this many milliseconds from now. */
  readonly delay?: number | undefined
  /** Run no sooner than this time (wins over `delay`). */
  readonly runAt?: Date | undefined
  /** Higher runs first; defaults to the job type's priority. */
  readonly priority?: number | undefined
  /**
   * The same key for the same job type within `PLINTH_JOBS_IDEMPOTENCY_WINDOW` creates no second
   * job: the result names the existing one with `created: false`.
   */
  readonly idempotencyKey?: string | undefined
  /** Stored with the job and put on every log line of every attempt. */
  readonly requestId?: string | undefined
  /** When the queue is full: `reject` (default) throws `PLINTH_JOB_QUEUE_FULL`; `accept` enqueues anyway. */
  readonly overflow?: 'reject' | 'accept' | undefined
  /** A Kysely transaction: the job exists only if that transaction commits. */
  readonly db?: Kysely<PlinthTables> | undefined
  /**
   * An administrator's enqueue (HTTP, CLI): `job:enqueued` is recorded in the job's transaction.
   * Jobs that modules enqueue for their own work pass nothing and are not audited.
   */
  readonly audit?: AuditCaller | undefined
}

export interface EnqueueResult {
  readonly id: string
  /** False when an idempotency key matched an existing job. */
  readonly created: boolean
}

export interface JobTypeView {
  readonly name: string
  readonly description: string | null
  readonly policy: ResolvedPolicy
  readonly deadLetterQueue: string | null
  readonly waiting: number
  readonly deadLettered: number
}

/**
 * The job engine as modules see it (`ctx.jobs`): typed job types, enqueue with validation,
 * idempotency keys and backpressure, and the administrator's commands. Commands that take an
 * `AuditCaller` record their audit row in the transaction of the change.
 */
export interface JobEngine {
  readonly mode: JobsMode
  /** Started and not stopping: enqueue and the commands work. */
  readonly running: boolean
  /** Adds a job type; before `start()` only. */
  register(definition: JobDefinition): void
  /** Wakes a local worker of the job type now instead of at its next poll. */
  wake(name: string): void
  has(name: string): boolean
  definitions(): readonly { definition: JobDefinition; policy: ResolvedPolicy }[]
  /**
   * Installs or checks the engine's schema and creates the queues; in `worker` mode also starts the
   * workers, cron and maintenance. `deferWorkers`: the workers (the fetch loops of every job type)
   * wait for `startWorkers()`, so that a start's own statements are not queued behind their first
   * fetches (the server starts them once it listens).
   */
  start(mode: JobsMode, options?: { readonly deferWorkers?: boolean }): Promise<void>
  /** After `start(mode, { deferWorkers: true })`: starts the workers (worker mode; once; a no-op otherwise). */
  startWorkers(): Promise<void>
  stop(timeoutMs: number): Promise<void>
  /** Throws `PLINTH_JOB_PAYLOAD_INVALID` (naming the fields) unless the payload matches the type's schema. */
  validatePayload(name: string, payload: unknown): void
  enqueue(name: string, payload: unknown, options?: EnqueueOptions): Promise<EnqueueResult>
  /** Jobs of a type (or queue) waiting to run, counted up to `cap`. */
  waiting(name: string, cap: number): Promise<number>
  get(id: string): Promise<JobView>
  list(filter: JobFilter): Promise<{ items: JobView[]; nextCursor: string | null }>
  retry(id: string, by?: AuditCaller): Promise<JobView>
  cancel(id: string, by?: AuditCaller): Promise<JobView>
  purgeDeadLetter(name: string, by?: AuditCaller): Promise<number>
  redriveDeadLetter(name: string, by?: AuditCaller): Promise<number>
  types(): Promise<JobTypeView[]>
  /**
   * Optional: what a new embedded cluster's migrated template may hold of the engine, so that a
   * cluster started from it has the engine's tables and queues at once (decision 0039).
   */
  readonly template?: JobEngineTemplate | undefined
}

/** The engine's part of the embedded database's migrated template (`JobEngine.template`). */
export interface JobEngineTemplate {
  /** What the installed content depends on besides the migrations (the engine's schema version): part of the template's key. */
  readonly key: string
  /**
   * Installs the engine's own schema and creates the registered job types' queues, starting
   * nothing (no worker, cron or maintenance) and leaving the engine unstarted: called once every
   * type is registered, before the cluster is kept as the template.
   */
  install(): Promise<void>
}

/** Ticks missed while no worker ran: `skip` them, or run `once` for the latest. */
export type MissedPolicy = 'skip' | 'once'

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

/** Cron schedules that enqueue jobs (`ctx.schedules`); `job_schedules` is their source of truth. */
export interface Schedules {
  create(
    input: ScheduleInput,
    by?: AuditCaller,
    internal?: { id?: string; builtin?: boolean },
  ): Promise<ScheduleView>
  update(id: string, patch: Partial<Omit<ScheduleInput, 'jobName'>>, by?: AuditCaller): Promise<ScheduleView>
  setPaused(id: string, paused: boolean, by?: AuditCaller): Promise<ScheduleView>
  remove(id: string, by?: AuditCaller): Promise<void>
  get(id: string): Promise<ScheduleView>
  list(filter?: { jobName?: string | undefined }): Promise<ScheduleView[]>
  /** Makes the engine's copies match `job_schedules` (workers, at start). */
  reconcile(): Promise<{ armed: number; removed: number }>
  /** Creates or updates a built-in schedule under a fixed id. */
  ensureBuiltin(id: string, input: ScheduleInput): Promise<void>
}
