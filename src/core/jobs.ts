import type { Logger } from 'pino'
import type { Static, TSchema } from 'typebox'

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
  /** TypeBox schema of the payload; enqueue refuses a payload that does not match it. */
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
