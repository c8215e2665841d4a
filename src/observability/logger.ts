import { createRequire } from 'node:module'
import pino, { type DestinationStream, type Logger } from 'pino'
import type { PlinthConfig } from '../config/config.schema.ts'

/**
 * Everything that must never reach a log line. Paths follow pino's redaction syntax; `*` matches
 * one level, so the common nestings are listed explicitly.
 */
export const REDACT_PATHS: readonly string[] = [
  'req.headers.authorization',
  'req.headers.cookie',
  'req.headers["x-api-key"]',
  'req.headers["x-csrf-token"]',
  'res.headers["set-cookie"]',
  'headers.authorization',
  'headers.cookie',
  ...[
    'password',
    'newPassword',
    'currentPassword',
    'token',
    'accessToken',
    'refreshToken',
    'secret',
    'secretKey',
    'apiKey',
    'totpCode',
    'recoveryCode',
    'totpSecret',
    'masterKey',
    'databaseUrl',
    'redisUrl',
  ].flatMap((k) => [k, `*.${k}`, `body.${k}`, `req.body.${k}`]),
]

type LoggerConfig = Pick<PlinthConfig, 'logLevel' | 'logFormat' | 'env'>

function prettyStream(): DestinationStream | undefined {
  try {
    // pino-pretty is a development dependency: absent in production images, hence the guarded require.
    const pretty = createRequire(import.meta.url)('pino-pretty') as (o: object) => DestinationStream
    return pretty({ colorize: true, translateTime: 'HH:MM:ss.l', ignore: 'pid,hostname,service,env' })
  } catch {
    return undefined
  }
}

/**
 * The process logger: JSON lines with a string level and ISO time, secrets redacted.
 *
 * @example
 * const log = createLogger(config)
 * log.info({ jobId }, 'job completed')
 */
export function createLogger(config: LoggerConfig, destination?: DestinationStream): Logger {
  const stream =
    destination ??
    (config.logFormat === 'pretty' ? prettyStream() : undefined) ??
    pino.destination({ sync: false })
  return pino(
    {
      level: config.logLevel,
      base: { service: 'plinth', env: config.env },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      redact: { paths: [...REDACT_PATHS], censor: '[redacted]' },
    },
    stream,
  )
}

/** Keys whose values never reach a log, at any depth of a logged body. */
const SENSITIVE_KEY =
  /pass(word)?|secret|token|api[-_]?key|authorization|cookie|otp|totp|recovery|credential|private[-_]?key|master[-_]?key/i

/**
 * A copy of `value` with every sensitive field replaced by `[redacted]`, however deeply nested
 * (pino's path redaction only reaches the depths it is told). Used for request bodies.
 */
export function redactDeep(value: unknown, depth = 0): unknown {
  if (depth > 8) return '[truncated]'
  if (Array.isArray(value)) return value.map((v) => redactDeep(v, depth + 1))
  if (value === null || typeof value !== 'object') return value
  const out: Record<string, unknown> = {}
  for (const [key, v] of Object.entries(value)) {
    out[key] = SENSITIVE_KEY.test(key) ? '[redacted]' : redactDeep(v, depth + 1)
  }
  return out
}
