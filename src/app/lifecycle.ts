import type { Logger } from 'pino'
import type { Plinth } from './create-plinth.ts'

export interface SignalOptions {
  readonly logger: Logger
  /** Injectable for tests; defaults to process.exit. */
  readonly exit?: (code: number) => void
  /**
   * This process's signals may arrive twice: from the terminal or supervisor and relayed by the
   * `plinth` command that re-ran itself on Node 24 (bin/plinth.js sets PLINTH_SIGNAL_RELAY). The
   * same signal again within RELAY_REPEAT_MS counts once.
   */
  readonly relayed?: boolean
  /** Injectable for tests: milliseconds of a monotonic clock; defaults to performance.now. */
  readonly now?: () => number
}

/** The environment variable bin/plinth.js sets when it relays its signals to this process. */
export const SIGNAL_RELAY_ENV = 'PLINTH_SIGNAL_RELAY'
/**
 * A relayed copy follows its original within microseconds on a quiet machine, but the relaying
 * process has to be scheduled first: on a loaded CI machine the copy came more than 250 ms later
 * and counted as a second signal, forcing the exit. A person's second Ctrl-C within this window
 * counts once (a third one forces the exit).
 */
export const RELAY_REPEAT_MS = 1000

/**
 * SIGTERM or SIGINT starts a graceful shutdown and exits 0 when it completes; a second signal
 * exits at once with code 1 (with `relayed`, a repeat of the same signal within RELAY_REPEAT_MS is
 * the same signal, not a second one). Uncaught errors are logged, reported to `errorReports` (given
 * a second to be stored) and exit 1: the supervisor restarts us rather than letting a process of
 * unknown state serve.
 *
 * @returns a function that removes the handlers.
 */
export function handleProcessSignals(plinth: Plinth, options: SignalOptions): () => void {
  const exit = options.exit ?? ((code: number) => process.exit(code))
  const log = options.logger
  let received = 0
  const now = options.now ?? (() => performance.now())
  let last: { signal: NodeJS.Signals; at: number } | undefined
  const onSignal = (signal: NodeJS.Signals) => {
    const at = now()
    const repeat = options.relayed && last?.signal === signal && at - last.at < RELAY_REPEAT_MS
    last = { signal, at }
    if (repeat) return
    received++
    if (received > 1) {
      log.warn({ signal }, 'second signal, forcing exit')
      exit(1)
      return
    }
    log.info({ signal }, 'signal received, shutting down')
    plinth.shutdown().then(
      () => exit(0),
      (err: unknown) => {
        log.error({ err }, 'shutdown failed')
        exit(1)
      },
    )
  }
  let fatal = false
  const onFatal = (where: 'uncaughtException' | 'unhandledRejection') => (err: unknown) => {
    log.fatal({ err }, 'uncaught error, exiting')
    if (fatal) return
    fatal = true
    // Recorded by the errors module when it can be within a second; the exit does not wait longer.
    const reports = plinth.context.errorReports
    reports.report({ error: err, source: 'process', where })
    void Promise.all([reports.settle(1000), plinth.tracing?.flush(1000)]).finally(() => exit(1))
  }
  const onException = onFatal('uncaughtException')
  const onRejection = onFatal('unhandledRejection')
  process.on('SIGTERM', onSignal)
  process.on('SIGINT', onSignal)
  process.on('uncaughtException', onException)
  process.on('unhandledRejection', onRejection)
  return () => {
    process.off('SIGTERM', onSignal)
    process.off('SIGINT', onSignal)
    process.off('uncaughtException', onException)
    process.off('unhandledRejection', onRejection)
  }
}
