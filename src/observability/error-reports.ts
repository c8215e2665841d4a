import type { Logger } from 'pino'
import { activeTraceId } from './tracing.ts'

/** Where an unexpected error surfaced. */
export type ErrorSource = 'http' | 'job' | 'process'

/** One unexpected error: a 500 answer, a job's last failed attempt, an uncaught exception. */
export interface ErrorReport {
  readonly error: unknown
  readonly source: ErrorSource
  /** The route template (`GET /api/v1/things/:id`), the job type, or `uncaughtException`/`unhandledRejection`. */
  readonly where: string
  readonly requestId?: string | undefined
  /** Filled from the active span when absent. */
  readonly traceId?: string | undefined
}

export type ErrorListener = (report: ErrorReport) => Promise<void> | void

/**
 * The process's unexpected errors, as a stream any module may listen to (`ctx.errorReports`): the
 * job engine reports jobs that failed for the last time, the root reports uncaught exceptions, the
 * HTTP layer's 500s are reported by whoever listens to requests (the errors module groups and
 * stores them all). Reporting never throws and never waits: listeners' work is tracked, and
 * `settle` waits for it (before a process exits on an uncaught error).
 */
export interface ErrorReports {
  report(report: ErrorReport): void
  /** Adds a listener; returns its removal. */
  subscribe(listener: ErrorListener): () => void
  /** Waits (at most `timeoutMs`) for what listeners are still doing with earlier reports. */
  settle(timeoutMs: number): Promise<void>
}

export function createErrorReports(deps: { logger: Logger }): ErrorReports {
  const listeners = new Set<ErrorListener>()
  const pending = new Set<Promise<void>>()
  return {
    report(report) {
      const full = report.traceId ? report : { ...report, traceId: activeTraceId() }
      for (const listener of listeners) {
        try {
          const result = listener(full)
          if (result instanceof Promise) {
            const p = result.catch((err: unknown) =>
              deps.logger.warn({ err }, 'an error report could not be recorded'),
            )
            pending.add(p)
            void p.finally(() => pending.delete(p))
          }
        } catch (err) {
          deps.logger.warn({ err }, 'an error report could not be recorded')
        }
      }
    },
    subscribe(listener) {
      listeners.add(listener)
      return () => listeners.delete(listener)
    },
    async settle(timeoutMs) {
      if (pending.size === 0) return
      let timer: NodeJS.Timeout | undefined
      await Promise.race([
        Promise.allSettled([...pending]),
        new Promise((resolve) => {
          timer = setTimeout(resolve, timeoutMs)
        }),
      ])
      clearTimeout(timer)
    },
  }
}
