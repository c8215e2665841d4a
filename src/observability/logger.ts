import { createRequire } from 'node:module'
import pino, { type DestinationStream, type Logger } from 'pino'
import type { PlinthConfig } from '../config/config.schema.ts'
import { type TracingConfig, traceFields, tracingConfigured } from './tracing.ts'

/**
 * Keys whose values never reach a log line, at any depth: credentials, session and API tokens,
 * second factors, keys. Matched against the whole key, case-insensitively, so `tokenId` or
 * `passwordChangedAt` stay readable while `token`, `sessionToken` or `newPassword` do not.
 */
export const SENSITIVE_KEY =
  /^(.*password|.*passphrase|.*passcode|.*secret(key)?|.*token|api[-_]?key|authorization|proxy-authorization|cookie|set-cookie|x-csrf-token|[th]?otp([-_]?(code|secret))?|(mfa|totp|otp|second[-_]?factor|verification|backup)[-_]?codes?|challenge|.*recovery[-_]?codes?|(master|private|data)[-_]?key|credentials?|database[-_]?url|redis[-_]?url|smtp[-_]?url)$/i

/**
 * Keys that are credentials inside a request or response body (`code`, `codes`, `pin`: second
 * factors and recovery codes), whatever the route, but ordinary words elsewhere (`code` is an error
 * code on most log lines). They are redacted beneath a `body` key, at any depth.
 */
export const SENSITIVE_BODY_KEY = /^(codes?|pin)$/i

/** The keys beneath which SENSITIVE_BODY_KEY applies too. */
const BODY_KEY = /^(body|payload|request[-_]?body|response[-_]?body)$/i

const REDACTED = '[redacted]'

// Log lines repeat the same few keys, so the verdict per key is remembered (bounded).
// 0: readable, 1: sensitive, 2: sensitive in a body only, 3: readable, but starts a body.
const verdicts = new Map<string, number>()
function verdictOf(key: string): number {
  let verdict = verdicts.get(key)
  if (verdict === undefined) {
    verdict = SENSITIVE_KEY.test(key) ? 1 : SENSITIVE_BODY_KEY.test(key) ? 2 : BODY_KEY.test(key) ? 3 : 0
    if (verdicts.size < 4096) verdicts.set(key, verdict)
  }
  return verdict
}
const MAX_DEPTH = 8

function redactArray(
  value: readonly unknown[],
  depth: number,
  inBody: boolean,
): unknown[] | readonly unknown[] {
  let copy: unknown[] | undefined
  for (let i = 0; i < value.length; i++) {
    const next = redactValue(value[i], depth + 1, inBody)
    if (next !== value[i]) {
      copy ??= [...value]
      copy[i] = next
    }
  }
  return copy ?? value
}

function redactValue(value: unknown, depth: number, inBody: boolean): unknown {
  if (value === null || typeof value !== 'object' || value instanceof Error || value instanceof Date)
    return value
  if (depth > MAX_DEPTH) return '[truncated]'
  if (Array.isArray(value)) return redactArray(value, depth, inBody)
  let copy: Record<string, unknown> | undefined
  for (const key in value) {
    const current = (value as Record<string, unknown>)[key]
    const verdict = verdictOf(key)
    const next =
      verdict === 1 || (verdict === 2 && inBody)
        ? REDACTED
        : redactValue(current, depth + 1, inBody || verdict === 3)
    if (next !== current) {
      copy ??= { ...(value as Record<string, unknown>) }
      copy[key] = next
    }
  }
  return copy ?? value
}

/**
 * `value` with every sensitive field replaced by `[redacted]`, however deeply nested. Copy on
 * write: an object with nothing to hide is returned as is, so the common log line costs one regex
 * test per key and no allocation.
 */
export function redactDeep<T>(value: T): T {
  return redactValue(value, 0, false) as T
}

type LoggerConfig = Pick<PlinthConfig, 'logLevel' | 'logFormat' | 'env'> & Partial<TracingConfig>

/**
 * Where JSON logs go: stdout (or `dest`), written asynchronously. No `minLength` buffering:
 * sonic-boom has no time-based flush, so a buffered line could wait indefinitely on a quiet
 * instance (measured: it did not change throughput). pino flushes on exit.
 */
export function logDestination(dest: string | number = 1): DestinationStream {
  return pino.destination({ dest, sync: false })
}

/**
 * Pretty log lines (pino-pretty, a development dependency) into `destination` (stdout by default),
 * or undefined when pino-pretty is not installed.
 */
export function prettyStream(destination?: NodeJS.WritableStream): DestinationStream | undefined {
  try {
    // pino-pretty is a development dependency: absent in production images, hence the guarded require.
    const pretty = createRequire(import.meta.url)('pino-pretty') as (o: object) => DestinationStream
    return pretty({
      colorize: destination === undefined ? true : Boolean((destination as { isTTY?: boolean }).isTTY),
      translateTime: 'HH:MM:ss.l',
      ignore: 'pid,hostname,service,env',
      ...(destination ? { destination } : {}),
    })
  } catch {
    return undefined
  }
}

/**
 * The process logger: JSON lines with a string level and ISO time. Every line's object passes
 * through `redactDeep` (one place, every depth) instead of pino's path list, which must name each
 * nesting and costs more per line.
 *
 * While tracing is configured (or `options.traceIds`), every line written inside a trace carries
 * its `traceId` and `spanId` (a pino `mixin`), so logs and traces join; otherwise no mixin runs.
 *
 * @example
 * const log = createLogger(config)
 * log.info({ jobId }, 'job completed')
 */
export function createLogger(
  config: LoggerConfig,
  destination?: DestinationStream,
  options: { traceIds?: boolean } = {},
): Logger {
  const traceIds =
    options.traceIds ??
    (config.otelEndpoint !== undefined || config.otelTracesEndpoint !== undefined
      ? tracingConfigured(config as TracingConfig)
      : false)
  const stream =
    destination ?? (config.logFormat === 'pretty' ? prettyStream() : undefined) ?? logDestination()
  return pino(
    {
      level: config.logLevel,
      base: { service: 'plinth', env: config.env },
      timestamp: pino.stdTimeFunctions.isoTime,
      ...(traceIds ? { mixin: traceFields } : {}),
      formatters: {
        level: (label) => ({ level: label }),
        log: (object) => redactDeep(object),
        bindings: (bindings) => redactDeep(bindings),
      },
    },
    stream,
  )
}
