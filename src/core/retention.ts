/**
 * Retention: the contract a module implements to have its expired rows deleted (`PlinthModule.retention`),
 * and the runner the built-in `plinth.retention` job and `plinth retention run` share.
 */
import type { Kysely } from 'kysely'
import type { Logger } from 'pino'
import type { PlinthTables } from '../infra/db/tables.ts'

/** Rows one delete statement removes at most: a backlog is worked off in short statements, not one long lock. */
export const RETENTION_BATCH = 1000

/** What a rule gets for one run. */
export interface RetentionRun {
  readonly db: Kysely<PlinthTables>
  /** The run's reference time: rows are old relative to it. */
  readonly now: Date
  /** Aborted when the job times out or the process stops: stop between batches (see `deleteInBatches`). */
  readonly signal: AbortSignal
  /**
   * Call after each committed batch (`deleteInBatches` does), so that a run that fails or is aborted
   * midway still counts, logs and audits what it removed.
   */
  readonly onDeleted: (rows: number) => void
}

/**
 * One kind of expired row and how to delete it. Rules must be safe to run again at any time (the
 * job is delivered at least once, and an operator may run `plinth retention run` alongside it).
 *
 * @example
 * const oldMail: RetentionRule = {
 *   name: 'mail.outbox',
 *   describe: 'e-mail recorded more than PLINTH_MAIL_RETENTION (30d) ago',
 *   run: (run) =>
 *     deleteInBatches(run, async (limit) => ...delete up to `limit` rows older than the cutoff, return how many...),
 * }
 */
export interface RetentionRule {
  /** `module.what`, lower case (`accounts.sessions`): the metric label and the key of the counts. */
  readonly name: string
  /** What it deletes, for people (logs, `plinth retention run`). */
  readonly describe: string
  run(run: RetentionRun): Promise<{ deleted: number }>
}

/** A period for people, in the largest whole unit: `30d`, `12h`, `90m`, `45s`, `250ms`. */
export function formatPeriod(ms: number): string {
  for (const [unit, size] of [
    ['d', 86_400_000],
    ['h', 3_600_000],
    ['m', 60_000],
    ['s', 1000],
  ] as const)
    if (ms !== 0 && ms % size === 0) return `${ms / size}${unit}`
  return `${ms}ms`
}

export const RETENTION_RULE_NAME = /^[a-z][a-z0-9-]*\.[a-z][a-z0-9.-]*$/

/**
 * Calls `deleteBatch(limit)` until it deletes fewer than `limit` rows, or the run's signal aborts
 * (then it throws the abort reason; the batches before stay deleted and counted). Each call should
 * be one statement (or one short transaction) deleting at most `limit` rows (default
 * `RETENTION_BATCH`), so that a large backlog never holds locks for long.
 */
export async function deleteInBatches(
  run: Pick<RetentionRun, 'signal' | 'onDeleted'>,
  deleteBatch: (limit: number) => Promise<number>,
  options: { limit?: number } = {},
): Promise<{ deleted: number }> {
  const limit = options.limit ?? RETENTION_BATCH
  let deleted = 0
  for (;;) {
    run.signal.throwIfAborted()
    const n = await deleteBatch(limit)
    deleted += n
    if (n > 0) run.onDeleted(n)
    if (n < limit) return { deleted }
  }
}

export interface RetentionRuleResult {
  readonly rule: string
  readonly describe: string
  readonly deleted: number
  /** Set when the rule failed (its earlier batches stay deleted). */
  readonly error?: string
}

export interface RetentionReport {
  readonly results: readonly RetentionRuleResult[]
  readonly deleted: number
  readonly ok: boolean
  readonly durationMs: number
}

export interface Retention {
  readonly rules: readonly RetentionRule[]
  /**
   * Runs every rule once, in order. A rule that fails does not stop the others; the report says
   * which failed. Counts go to the log (`retention rule finished`), the
   * `plinth_retention_deleted_total{rule}` counter and one `retention:ran` audit row.
   */
  run(options?: {
    signal?: AbortSignal
    now?: Date
    trigger?: string
    logger?: Logger
  }): Promise<RetentionReport>
}
