import type { Logger } from 'pino'
import type { Plinth } from './create-plinth.ts'

export interface SignalOptions {
  readonly logger: Logger
  /** Injectable for tests; defaults to process.exit. */
  readonly exit?: (code: number) => void
}

/**
 * SIGTERM or SIGINT starts a graceful shutdown and exits 0 when it completes; a second signal
 * exits at once with code 1. Uncaught errors are logged and exit 1: the supervisor restarts us
 * rather than letting a process of unknown state serve.
 *
 * @returns a function that removes the handlers.
 */
export function handleProcessSignals(plinth: Plinth, options: SignalOptions): () => void {
  const exit = options.exit ?? ((code: number) => process.exit(code))
  const log = options.logger
  let received = 0
  const onSignal = (signal: NodeJS.Signals) => {
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
  const onFatal = (err: unknown) => {
    log.fatal({ err }, 'uncaught error, exiting')
    exit(1)
  }
  process.on('SIGTERM', onSignal)
  process.on('SIGINT', onSignal)
  process.on('uncaughtException', onFatal)
  process.on('unhandledRejection', onFatal)
  return () => {
    process.off('SIGTERM', onSignal)
    process.off('SIGINT', onSignal)
    process.off('uncaughtException', onFatal)
    process.off('unhandledRejection', onFatal)
  }
}
