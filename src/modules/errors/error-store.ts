import { type Kysely, sql } from 'kysely'
import type { Logger } from 'pino'
import type { PlinthTables } from '../../infra/db/tables.ts'
import type { ErrorReport } from '../../observability/error-reports.ts'
import { scrubText } from '../../observability/logger.ts'
import { errorNameOf, fingerprintOf, normaliseFrames } from './fingerprint.ts'
import './errors.tables.ts'

/** Distinct groups held between two flushes; more are counted as dropped (a storm of new faults). */
export const MAX_PENDING_GROUPS = 1000
const MESSAGE_MAX = 1000

interface Pending {
  fingerprint: string
  source: ErrorReport['source']
  location: string
  errorName: string
  message: string
  frames: string
  count: number
  firstSeen: Date
  lastSeen: Date
  requestId: string | null
  traceId: string | null
}

/**
 * Counts unexpected errors by fingerprint in memory and writes the counts to `error_groups` every
 * `flushMs` (one upsert per group, not per error: a storm of one fault costs one statement a
 * second). A group seen again after it was resolved opens again (a regression); a muted one keeps
 * counting, silently.
 */
export function createErrorRecorder(deps: {
  db: Kysely<PlinthTables>
  logger: Logger
  version: string
  now: () => number
  flushMs?: number
}) {
  const log = deps.logger.child({ component: 'errors' })
  const pending = new Map<string, Pending>()
  let dropped = 0
  let timer: NodeJS.Timeout | undefined
  let flushing: Promise<void> = Promise.resolve()

  function add(report: ErrorReport): void {
    const fingerprint = fingerprintOf(report.error, report.where)
    const at = new Date(deps.now())
    // Secrets in the text (a URL's password, a Plinth token) are masked before it is cut, so that
    // no part of one is kept: the message is stored, listed to administrators and sent in alerts.
    const message = scrubText(
      report.error instanceof Error ? report.error.message : String(report.error),
    ).slice(0, MESSAGE_MAX)
    const existing = pending.get(fingerprint)
    if (existing) {
      existing.count++
      existing.lastSeen = at
      existing.message = message
      if (report.requestId) existing.requestId = report.requestId
      if (report.traceId) existing.traceId = report.traceId
      return
    }
    if (pending.size >= MAX_PENDING_GROUPS) {
      dropped++
      return
    }
    pending.set(fingerprint, {
      fingerprint,
      source: report.source,
      location: report.where.slice(0, 300),
      errorName: errorNameOf(report.error).slice(0, 200),
      message,
      frames: normaliseFrames(report.error instanceof Error ? report.error.stack : undefined).join('\n'),
      count: 1,
      firstSeen: at,
      lastSeen: at,
      requestId: report.requestId ?? null,
      traceId: report.traceId ?? null,
    })
  }

  async function write(groups: Pending[]): Promise<void> {
    for (const g of groups) {
      await deps.db
        .insertInto('error_groups')
        .values({
          fingerprint: g.fingerprint,
          source: g.source,
          location: g.location,
          error_name: g.errorName,
          message: g.message,
          frames: g.frames,
          count: g.count,
          first_seen: g.firstSeen,
          last_seen: g.lastSeen,
          sample_request_id: g.requestId,
          sample_trace_id: g.traceId,
          first_version: deps.version,
          last_version: deps.version,
        })
        .onConflict((oc) =>
          oc.column('fingerprint').doUpdateSet({
            count: sql<number>`error_groups.count + excluded.count`,
            last_seen: sql<Date>`greatest(error_groups.last_seen, excluded.last_seen)`,
            message: sql<string>`excluded.message`,
            sample_request_id: sql<string>`coalesce(excluded.sample_request_id, error_groups.sample_request_id)`,
            sample_trace_id: sql<string>`coalesce(excluded.sample_trace_id, error_groups.sample_trace_id)`,
            last_version: sql<string>`excluded.last_version`,
            status: sql`case when error_groups.status = 'resolved' then 'open' else error_groups.status end`,
            status_changed_at: sql<Date>`case when error_groups.status = 'resolved' then excluded.last_seen else error_groups.status_changed_at end`,
          }),
        )
        .execute()
    }
  }

  /** Writes what is pending; concurrent calls run one after the other. */
  function flush(): Promise<void> {
    flushing = flushing.then(async () => {
      if (dropped > 0) {
        log.warn({ dropped, max: MAX_PENDING_GROUPS }, 'error tracking dropped errors of too many new groups')
        dropped = 0
      }
      if (pending.size === 0) return
      const groups = [...pending.values()]
      pending.clear()
      try {
        await write(groups)
      } catch (err) {
        // The database is away: the counts are lost, the log still has every error.
        log.warn({ err, groups: groups.length }, 'error groups could not be stored')
      }
    })
    return flushing
  }

  return {
    add,
    flush,
    start() {
      timer ??= setInterval(() => void flush(), deps.flushMs ?? 1000)
      timer.unref()
    },
    async stop() {
      clearInterval(timer)
      timer = undefined
      await flush()
    },
  }
}

export type ErrorRecorder = ReturnType<typeof createErrorRecorder>
