import { readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { parseEnv } from 'node:util'
import { checkHttpConfig } from './check-http-config.ts'
import { configSchema, decodeMasterKey, type PlinthConfig } from './config.schema.ts'
import type { ConfigKey, PlinthEnv } from './config-types.ts'

export type EnvSource = Readonly<Record<string, string | undefined>>

export interface LoadConfigOptions {
  /** Variables to read; defaults to `process.env`. */
  env?: EnvSource
  /** A dotenv file to read beneath `env` (variables already set win). `false` skips it. Default `.env`. */
  envFile?: string | false
  /** Directory relative paths are resolved against. Default `process.cwd()`. */
  cwd?: string
}

/** Thrown when configuration is missing or invalid; `problems` lists every one, each with its fix. */
export class ConfigError extends Error {
  readonly code = 'PLINTH_CONFIG_INVALID'
  readonly problems: readonly string[]
  constructor(problems: readonly string[]) {
    const noun = problems.length === 1 ? 'problem' : 'problems'
    super(
      `Invalid configuration (${problems.length} ${noun}):\n${problems.map((p) => `  - ${p}`).join('\n')}\n` +
        'See docs/configuration.md for every setting.',
    )
    this.name = 'ConfigError'
    this.problems = problems
  }
}

type AnyKey = ConfigKey<unknown>
const keys = Object.entries(configSchema) as [keyof PlinthConfig, AnyKey][]

function readEnvFile(path: string): Record<string, string> {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {}
    throw new ConfigError([`could not read env file ${path}: ${(err as Error).message}`])
  }
  return parseEnv(text) as Record<string, string>
}

/** The raw text of one key, from `<ENV>` or, for secrets, `<ENV>_FILE`. */
function rawValue(key: AnyKey, env: EnvSource, cwd: string, problems: string[]): string | undefined {
  const direct = env[key.env]?.trim() ? env[key.env] : undefined
  const filePath = key.secret ? env[`${key.env}_FILE`]?.trim() : undefined
  if (direct !== undefined && filePath) {
    problems.push(`${key.env} and ${key.env}_FILE are both set: keep only one.`)
    return undefined
  }
  if (!filePath) return direct?.trim()
  try {
    const value = readFileSync(resolve(cwd, filePath), 'utf8').trim()
    if (!value) problems.push(`${key.env}_FILE points to ${filePath}, which is empty: put the secret in it.`)
    return value || undefined
  } catch (err) {
    problems.push(
      `${key.env}_FILE points to ${filePath}, which cannot be read (${(err as NodeJS.ErrnoException).code}): fix the path or its permissions.`,
    )
    return undefined
  }
}

function resolveDefault(key: AnyKey, env: PlinthEnv): unknown {
  return typeof key.default === 'function' ? (key.default as (e: PlinthEnv) => unknown)(env) : key.default
}

/**
 * Reads, parses and validates the whole configuration. Throws one `ConfigError` that lists every
 * problem (never a secret's value) and how to fix it.
 *
 * @example
 * const config = loadConfig({ env: { PLINTH_ENV: 'test', PORT: '0' }, envFile: false })
 */
export function loadConfig(options: LoadConfigOptions = {}): PlinthConfig {
  const cwd = options.cwd ?? process.cwd()
  const baseEnv = options.env ?? process.env
  const fileEnv = options.envFile === false ? {} : readEnvFile(resolve(cwd, options.envFile ?? '.env'))
  const env: EnvSource = { ...fileEnv, ...baseEnv }
  const problems: string[] = []
  const values: Record<string, unknown> = {}

  // The environment decides other defaults, so it is parsed first.
  let plinthEnv: PlinthEnv = 'development'
  try {
    const raw = env[configSchema.env.env]?.trim()
    if (raw) plinthEnv = configSchema.env.parse(raw)
  } catch (err) {
    problems.push(`${configSchema.env.env}: ${(err as Error).message}.`)
  }

  for (const [name, key] of keys) {
    if (name === 'env') continue
    const raw = rawValue(key, env, cwd, problems)
    if (raw === undefined) {
      values[name] = resolveDefault(key, plinthEnv)
      continue
    }
    try {
      values[name] = key.parse(raw)
    } catch (err) {
      const message = key.secret ? 'the value is not valid (not shown: it is secret)' : (err as Error).message
      problems.push(`${key.env}: ${message}. ${key.doc}`)
      // The default stands in, so that the rules across keys still run and the message lists everything.
      values[name] = resolveDefault(key, plinthEnv)
    }
  }
  values.env = plinthEnv

  problems.push(...checkRules(values as PlinthConfig))
  problems.push(...checkHttpConfig(values, cwd))
  if (problems.length > 0) throw new ConfigError(problems)
  return Object.freeze(values as PlinthConfig)
}

const ORIGIN = /^https?:\/\/[a-z0-9.-]+(:\d{1,5})?$/i

/** Rules across keys, and what staging and production refuse. */
function checkRules(c: PlinthConfig): string[] {
  const problems: string[] = []
  const deployed = c.env === 'staging' || c.env === 'production'
  if (c.secretKey !== undefined && c.secretKey.length < 32) {
    problems.push(
      'PLINTH_SECRET_KEY is shorter than 32 characters: use a random value, e.g. `openssl rand -base64 48`.',
    )
  }
  if (deployed && c.secretKey === undefined) {
    problems.push(
      `PLINTH_SECRET_KEY is required in ${c.env}: set it (or PLINTH_SECRET_KEY_FILE) to a random value of at least 32 characters, e.g. \`openssl rand -base64 48\`.`,
    )
  }
  if (c.masterKey !== undefined && decodeMasterKey(c.masterKey) === undefined) {
    problems.push(
      'PLINTH_MASTER_KEY is not base64 of exactly 32 bytes (value not shown: it is secret): generate one with `openssl rand -base64 32`.',
    )
  }
  if (deployed && c.masterKey === undefined) {
    problems.push(
      `PLINTH_MASTER_KEY is required in ${c.env}: set it (or PLINTH_MASTER_KEY_FILE) to base64 of 32 random bytes, e.g. \`openssl rand -base64 32\`, and keep it safe: what it encrypts cannot be read without it.`,
    )
  }
  if (c.opsToken !== undefined && c.opsToken.length < 32) {
    problems.push(
      'PLINTH_OPS_TOKEN is shorter than 32 characters: use a random value, e.g. `openssl rand -hex 32`.',
    )
  }
  for (const origin of c.corsOrigins) {
    if (origin !== '*' && !ORIGIN.test(origin)) {
      problems.push(
        `PLINTH_CORS_ORIGINS: "${origin}" is not an origin; write scheme://host[:port] with no path.`,
      )
    }
  }
  if (c.corsCredentials && c.corsOrigins.includes('*')) {
    problems.push(
      'PLINTH_CORS_ORIGINS contains `*` while PLINTH_CORS_CREDENTIALS=true: list the exact origins allowed to send credentials.',
    )
  }
  if (c.replicas > 1 && c.databaseUrl === undefined) {
    problems.push(
      `PLINTH_REPLICAS=${c.replicas} but DATABASE_URL is unset: the embedded database serves one process only; set DATABASE_URL to a PostgreSQL server.`,
    )
  }
  if (c.adminEmail !== undefined && c.adminPassword === undefined) {
    problems.push(
      "PLINTH_ADMIN_EMAIL is set without PLINTH_ADMIN_PASSWORD (or PLINTH_ADMIN_PASSWORD_FILE): set the first administrator's password too.",
    )
  }
  if (c.sessionIdleTimeout > c.sessionMaxAge) {
    problems.push(
      'PLINTH_SESSION_IDLE_TIMEOUT is longer than PLINTH_SESSION_MAX_AGE: make the idle timeout the shorter one.',
    )
  }
  if (c.env === 'production') {
    if (c.logBodies)
      problems.push('PLINTH_LOG_BODIES=true is refused in production: request bodies may hold personal data.')
    if (c.logFormat === 'pretty')
      problems.push('PLINTH_LOG_FORMAT=pretty is refused in production: use json.')
    if (c.logLevel === 'trace')
      problems.push('PLINTH_LOG_LEVEL=trace is refused in production: use debug at most.')
  }
  return problems
}

/** The configuration with secrets masked, for printing. */
export function describeConfig(config: PlinthConfig): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const [name, key] of keys) {
    const value = config[name]
    out[key.env] = key.secret && value !== undefined ? maskSecret(name, value as string) : value
  }
  return out
}

function maskSecret(name: string, value: string): string {
  if (name === 'databaseUrl' || name === 'redisUrl' || name === 'smtpUrl') return redactUrl(value)
  return '********'
}

/** A connection URL without its password, safe to log. */
export function redactUrl(value: string): string {
  try {
    const u = new URL(value)
    if (u.password) u.password = '****'
    return u.toString()
  } catch {
    return '********'
  }
}

/**
 * The environment that reproduces `config` in another process (`loadConfig` there reads back the
 * same values): every key, unset ones as empty strings so that a `.env` file cannot fill them in.
 * It holds the secrets: give it only to a child process's environment, never to a log or argv.
 */
export function configEnv(config: PlinthConfig): Record<string, string> {
  const out: Record<string, string> = {}
  for (const [name, key] of keys) {
    const value: unknown = config[name]
    out[key.env] =
      value === undefined || value === null
        ? ''
        : Array.isArray(value)
          ? value.join(',')
          : String(value as string | number | boolean)
  }
  return out
}
