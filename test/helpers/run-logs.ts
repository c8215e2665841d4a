/**
 * Capture side of the whole-run log scan. `npm test` loads test/helpers/global-log-scan.ts, whose
 * setup names a run directory in `PLINTH_TEST_LOG_DIR`; every test process then
 *
 * - writes the logs of the Plinth instances it builds (`startTestPlinth`, `captureLogs`,
 *   `testLogger`) at debug into `<test file>-<pid>.log.ndjson`, and the JSON log lines its child
 *   processes print into `…child-<pid>.log.ndjson` (`teeChildLogs`);
 * - records the secrets the tests handle (`recordSecret`): what goes through `app.inject()`
 *   (passwords, tokens, TOTP secrets, recovery codes …) and the secret configuration values, in
 *   `<test file>-<pid>.secrets.ndjson`.
 *
 * The teardown scans the logs for those secrets and for secret shapes (test/helpers/log-scan.ts).
 * Without `PLINTH_TEST_LOG_DIR` (a single file run with `node --test`) all of this is a no-op.
 */
import type { ChildProcess } from 'node:child_process'
import { appendFileSync } from 'node:fs'
import { basename, join } from 'node:path'
import type { LightMyRequestResponse } from 'fastify'
import type { DestinationStream, Logger } from 'pino'
import { configSchema, decodeMasterKey, type PlinthConfig } from '../../src/config/config.schema.ts'
import { createLogger, logDestination } from '../../src/observability/logger.ts'
import { LOG_DIR_ENV, MIN_SECRET_LENGTH } from './log-scan.ts'

export type SecretKind =
  | 'password'
  | 'session token'
  | 'API token'
  | 'MFA challenge'
  | 'reset token'
  | 'invite token'
  | 'CSRF token'
  | 'TOTP secret'
  | 'recovery code'
  | 'webhook secret'
  | 'master key'
  | 'secret key'
  | 'ops token'
  | 'connection password'
  | 'token'
  | 'secret'

/** The run directory, or undefined when this run does not scan its logs. */
export function runLogDir(): string | undefined {
  return process.env[LOG_DIR_ENV] || undefined
}

const fileOf = (suffix: string) =>
  join(runLogDir()!, `${basename(process.argv[1] ?? 'node')}-${process.pid}${suffix}`)

let stream: DestinationStream | undefined
/** This process's log capture file (pino's asynchronous destination, flushed on exit), when scanning. */
export function runLogStream(): DestinationStream | undefined {
  if (!runLogDir()) return undefined
  stream ??= logDestination(fileOf('.log.ndjson'))
  return stream
}

/**
 * A logger for components a test builds by hand: writes to the run's log capture at debug when the
 * run scans its logs, and is silent otherwise.
 */
export function testLogger(): Logger {
  const capture = runLogStream()
  return createLogger({ env: 'test', logLevel: capture ? 'debug' : 'silent', logFormat: 'json' }, capture)
}

const recorded = new Set<string>()
/** Records a secret the logs must never contain (no-op when not scanning, or when too short to tell). */
export function recordSecret(kind: SecretKind, value: unknown): void {
  if (typeof value !== 'string' || !runLogDir()) return
  const secret = value.trim()
  if (secret.length < MIN_SECRET_LENGTH || secret === '[redacted]' || recorded.has(secret)) return
  recorded.add(secret)
  appendFileSync(fileOf('.secrets.ndjson'), `${JSON.stringify({ kind, value: secret })}\n`)
}

const CONFIG_KIND: Partial<Record<keyof PlinthConfig, SecretKind>> = {
  masterKey: 'master key',
  masterKeyPrevious: 'master key',
  secretKey: 'secret key',
  opsToken: 'ops token',
  adminPassword: 'password',
}

function recordConfigValue(name: string, value: unknown): void {
  if (typeof value !== 'string') return
  if (name.endsWith('Url')) {
    try {
      recordSecret('connection password', decodeURIComponent(new URL(value).password))
    } catch {}
    return
  }
  const kind = CONFIG_KIND[name as keyof PlinthConfig] ?? 'secret'
  recordSecret(kind, value)
  const bytes = kind === 'master key' ? decodeMasterKey(value) : undefined
  // The same key bytes written another way are the same leak.
  if (bytes)
    for (const form of ['base64', 'base64url', 'hex'] as const) recordSecret(kind, bytes.toString(form))
}

/** Records the secret values of a configuration (master keys, secret key, ops token, URL passwords …). */
export function recordConfigSecrets(config: PlinthConfig): void {
  if (!runLogDir()) return
  for (const [name, key] of Object.entries(configSchema)) {
    if ((key as { secret?: boolean }).secret) recordConfigValue(name, config[name as keyof PlinthConfig])
  }
}

/** Records the secret values of an environment given to a child process (`PLINTH_MASTER_KEY` …). */
export function recordEnvSecrets(env: Readonly<Record<string, string | undefined>>): void {
  if (!runLogDir()) return
  for (const [name, key] of Object.entries(configSchema)) {
    if ((key as { secret?: boolean }).secret) recordConfigValue(name, env[key.env])
  }
}

const PREFIX_KIND: Readonly<Record<string, SecretKind>> = {
  pls_: 'session token',
  plt_: 'API token',
  plc_: 'MFA challenge',
  plr_: 'reset token',
  pli_: 'invite token',
}
// Fields whose string values are secrets, in request and response bodies (an independent list, not
// the logger's: what the redactor misses must still be recorded).
const SECRET_FIELD = /^(.*password|.*token|.*secret|recovery-?codes?|challenge|otpauth.*|.*master-?key.*)$/i

function kindOf(key: string, value: string, url: string): SecretKind {
  const byPrefix = PREFIX_KIND[value.slice(0, 4)]
  if (byPrefix) return byPrefix
  if (/password/i.test(key)) return 'password'
  if (/csrf/i.test(key)) return 'CSRF token'
  if (/recovery/i.test(key)) return 'recovery code'
  if (/otpauth/i.test(key) || (/secret/i.test(key) && /mfa|totp/i.test(url))) return 'TOTP secret'
  if (/secret/i.test(key) && /webhook/i.test(url)) return 'webhook secret'
  if (/master/i.test(key)) return 'master key'
  return /token|challenge/i.test(key) ? 'token' : 'secret'
}

const EMAIL = /^[^\s@]+@[^\s@]+\.[a-z]{2,}$/i

function recordFields(value: unknown, url: string, depth = 0): void {
  if (value === null || typeof value !== 'object' || depth > 8) return
  for (const [key, v] of Object.entries(value)) {
    if (SECRET_FIELD.test(key)) {
      for (const item of [v].flat()) {
        // A "password" that is an e-mail address (tests of the refusal of the user's own address)
        // is public: the address is logged where addresses are.
        if (typeof item === 'string' && !EMAIL.test(item)) recordSecret(kindOf(key, item, url), item)
      }
    } else recordFields(v, url, depth + 1)
  }
}

function parsedJson(body: unknown): unknown {
  if (typeof body !== 'string' && !Buffer.isBuffer(body)) return body
  const text = String(body)
  if (!/^\s*[[{]/.test(text)) return undefined
  try {
    return JSON.parse(text)
  } catch {
    return undefined
  }
}

function recordCredentials(header: unknown, url: string): void {
  const credentials = /^\s*(?:bearer|basic)\s+(\S+)/i.exec(String(header ?? ''))?.[1]
  if (credentials) recordSecret(kindOf('token', credentials, url), credentials)
}

function recordCookies(cookies: unknown, url: string): void {
  for (const cookie of [cookies ?? []].flat()) {
    for (const [, name, value] of String(cookie).matchAll(/(?:^|[;,]\s*)([^=;,\s]+)=([^;,\s]*)/g)) {
      if (SECRET_FIELD.test(name!) || /session|csrf/i.test(name!))
        recordSecret(kindOf('token', value!, url), value)
    }
  }
}

type InjectArg =
  | string
  | { url?: unknown; path?: unknown; payload?: unknown; body?: unknown; headers?: unknown }

function recordRequest(arg: InjectArg): string {
  if (typeof arg === 'string') return arg
  const url = String(arg.url ?? arg.path ?? '')
  recordFields(parsedJson(arg.payload ?? arg.body), url)
  const headers = (arg.headers ?? {}) as Record<string, unknown>
  for (const [name, value] of Object.entries(headers)) {
    const lower = name.toLowerCase()
    if (lower === 'authorization' || lower === 'proxy-authorization') recordCredentials(value, url)
    else if (lower === 'cookie') recordCookies(value, url)
    else if (SECRET_FIELD.test(lower)) recordSecret(kindOf(lower, String(value), url), value)
  }
  return url
}

function recordResponse(res: LightMyRequestResponse, url: string): void {
  recordCookies(res.headers['set-cookie'], url)
  if (String(res.headers['content-type'] ?? '').includes('json')) recordFields(parsedJson(res.body), url)
}

/**
 * Records the secrets of every `app.inject(options)` call from now on: request bodies and
 * credentials headers, response bodies and session cookies. A no-op when not scanning.
 */
export function recordInjectedSecrets(app: { inject: unknown }): void {
  if (!runLogDir()) return
  const original = (app.inject as (...args: unknown[]) => unknown).bind(app)
  unrecorded.set(app, original)
  app.inject = (...args: unknown[]) => {
    // The chain form (no options) and the callback form are passed through untouched.
    if (args.length !== 1 || args[0] === undefined || args[0] === null) return original(...args)
    const url = recordRequest(args[0] as InjectArg)
    return (original(args[0]) as Promise<LightMyRequestResponse>).then((res) => {
      recordResponse(res, url)
      return res
    })
  }
}

const unrecorded = new WeakMap<object, (...args: unknown[]) => unknown>()

/**
 * `app.inject(options)` without recording its values as secrets: for generated input (the fuzz
 * suite), whose random strings in secret-named fields are no secrets and would match unrelated
 * log lines by chance.
 */
export function injectUnrecorded(app: { inject: unknown }, options: object): Promise<LightMyRequestResponse> {
  const inject = unrecorded.get(app) ?? (app.inject as (...args: unknown[]) => unknown).bind(app)
  return inject(options) as Promise<LightMyRequestResponse>
}

/** Whether a line a child printed is a Plinth (pino) log line rather than command output. */
function isLogLine(line: string): boolean {
  if (!line.startsWith('{') || !line.includes('"level"')) return false
  try {
    const parsed = JSON.parse(line) as { level?: unknown; msg?: unknown }
    return typeof parsed.level === 'string' && typeof parsed.msg === 'string'
  } catch {
    return false
  }
}

/**
 * Copies the JSON log lines a child process prints (stdout and stderr) into the run's log capture;
 * the test keeps reading the streams as before. Command output that is not a log line is left out.
 * `env`, the child's environment, has its secret values recorded.
 */
export function teeChildLogs(
  child: ChildProcess,
  env: Readonly<Record<string, string | undefined>> = {},
): void {
  if (!runLogDir()) return
  recordEnvSecrets(env)
  const file = fileOf(`.child-${child.pid ?? 'unknown'}.log.ndjson`)
  for (const source of [child.stdout, child.stderr]) {
    let pending = ''
    source?.on('data', (chunk: Buffer | string) => {
      pending += String(chunk)
      const end = pending.lastIndexOf('\n')
      if (end < 0) return
      const lines = pending.slice(0, end).split('\n').filter(isLogLine)
      pending = pending.slice(end + 1)
      if (lines.length > 0) appendFileSync(file, `${lines.join('\n')}\n`)
    })
  }
}
