import { Writable } from 'node:stream'
import type { Logger } from 'pino'
import type { PlinthConfig } from '../../src/config/config.schema.ts'
import { createLogger } from '../../src/observability/logger.ts'

export interface CapturedLogs {
  readonly logger: Logger
  /** Every line written so far, parsed. */
  lines(): Record<string, unknown>[]
  /** Every line written so far, as text. */
  text(): string
}

/** A real Plinth logger (same redaction, same format) writing into memory. */
export function captureLogs(config: PlinthConfig, level = 'debug'): CapturedLogs {
  const chunks: string[] = []
  const stream = new Writable({
    write(chunk, _enc, done) {
      chunks.push(String(chunk))
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
