import type { Logger } from 'pino'
import type { Plinth } from './create-plinth.ts'

export interface SignalOptions {
  readonly logger: Logger
  /** Injectable for tests; defaults to process.exit. */
  readonly exit?: (code: number) => void
  /**
   * This process's signals may arrive twice: from the terminal or supervisor, and relayed over the
   * IPC channel by the `plinth` command that re-ran itself on Node 24 (bin/plinth.js sets
   * PLINTH_SIGNAL_RELAY and emits RELAYED_SIGNAL_EVENT for each relayed one). Each source is counted
   * apart, and the signals received are the larger count: a relayed copy of a signal that also came
   * directly is not a second signal, however late it arrives.
   */
  readonly relayed?: boolean
}

/** The environment variable bin/plinth.js sets when it relays its signals to this process. */
export const SIGNAL_RELAY_ENV = 'PLINTH_SIGNAL_RELAY'
/** The process event bin/plinth.js emits, with the signal's name, for a signal relayed to it. */
export const RELAYED_SIGNAL_EVENT = 'plinth:relayed-signal'

/**
 * SIGTERM or SIGINT starts a graceful shutdown and exits 0 when it completes; a second signal
 * exits at once with code 1 (with `relayed`, signals sent directly and signals relayed are counted
 * apart, and the larger count is the number received: Ctrl-C, which reaches both processes, counts
 * once, and a second Ctrl-C twice). Uncaught errors are logged, reported to `errorReports` (given
 * a second to be stored) and exit 1: the supervisor restarts us rather than letting a process of
 * unknown state serve.
 *
 * @returns a function that removes the handlers.
 */
export function handleProcessSignals(plinth: Plinth, options: SignalOptions): () => void {
  const exit = options.exit ?? ((code: number) => process.exit(code))
  const log = options.logger
  let received = 0
  const count = { direct: 0, relayed: 0 }
  const onSignalFrom = (source: keyof typeof count) => (signal: NodeJS.Signals) => {
    count[source]++
    const now = options.relayed ? Math.max(count.direct, count.relayed) : count.direct
    // A copy of one already counted from the other source.
    if (now === received) return
    received = now
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
  const onSignal = onSignalFrom('direct')
  const onRelayed = onSignalFrom('relayed')
  process.on('SIGTERM', onSignal)
  process.on('SIGINT', onSignal)
  if (options.relayed) process.on(RELAYED_SIGNAL_EVENT, onRelayed)
  process.on('uncaughtException', onException)
  process.on('unhandledRejection', onRejection)
  return () => {
    process.off('SIGTERM', onSignal)
    process.off('SIGINT', onSignal)
    process.off(RELAYED_SIGNAL_EVENT, onRelayed)
    process.off('uncaughtException', onException)
    process.off('unhandledRejection', onRejection)
  }
}
