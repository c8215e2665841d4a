import { Writable } from 'node:stream'
import type { Logger } from 'pino'
import type { PlinthConfig } from '../../src/config/config.schema.ts'
import { createLogger } from '../../src/observability/logger.ts'
import { runLogStream } from './run-logs.ts'

export interface CapturedLogs {
  readonly logger: Logger
  /** Every line written so far, parsed. */
  lines(): Record<string, unknown>[]
  /** Every line written so far, as text. */
  text(): string
}

/** A real Plinth logger (same redaction, same format) writing into memory (and to the run's log capture). */
export function captureLogs(config: PlinthConfig, level = 'debug'): CapturedLogs {
  const chunks: string[] = []
  const run = runLogStream()
  const stream = new Writable({
    write(chunk, _enc, done) {
      chunks.push(String(chunk))
      run?.write(String(chunk)) // the whole-run log scan reads these lines too
      done()
    },
  })
  const logger = createLogger(
    { ...config, logFormat: 'json', logLevel: level as PlinthConfig['logLevel'] },
    stream,
  )
  const text = () => chunks.join('')
  return {
    logger,
    text,
    lines: () =>
      text()
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, unknown>),
  }
}
