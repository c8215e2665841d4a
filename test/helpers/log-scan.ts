/**
 * The whole-run log scan: reads every log a test run captured (test/helpers/run-logs.ts) and
 * reports each line that holds a secret, found three ways:
 *
 * - a known value: any secret a test process recorded (passwords, tokens, TOTP secrets, recovery
 *   codes, master keys …), whichever process logged it;
 * - a shape, recorded or not: Plinth tokens (`pls_`, `plt_`, `plc_`, `plr_`, `pli_` + 43
 *   characters), `otpauth://` URIs, argon2 hashes, recovery codes, TOTP codes (6 to 8 digits in a
 *   `code`-named field), credentials after `Bearer`, a base64 key under a key-like name;
 * - an unredacted field: a secret-named field (`password`, `token`, `secret` …) whose value is not
 *   `[redacted]`.
 *
 * A report names the file, the line and the kind of secret, never the secret itself.
 *
 * One deliberate exception: in development and test, without SMTP_URL, the mailer logs a captured
 * mail with its body (`mail captured (no SMTP_URL)`), which is how a developer gets a reset or
 * invitation link. Those lines may hold reset and invitation tokens; production never logs a body.
 */
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'

/** Names the run directory; set by the global setup of `npm test` (test/helpers/global-log-scan.ts). */
export const LOG_DIR_ENV = 'PLINTH_TEST_LOG_DIR'

/** Shorter values are not recorded: they would match by chance (a 6-digit code is not a secret here). */
export const MIN_SECRET_LENGTH = 10

export interface Leak {
  /** The log file, relative to the run directory. */
  readonly file: string
  /** 1-based. */
  readonly line: number
  /** What leaked: `session token`, `password`, `TOTP secret` … */
  readonly kind: string
  readonly foundBy: 'known value' | 'shape' | 'unredacted field'
}

export interface ScanResult {
  readonly files: number
  readonly lines: number
  /** Distinct known secrets looked for. */
  readonly secrets: number
  readonly leaks: readonly Leak[]
}

const PREFIX_KIND: Readonly<Record<string, string>> = {
  pls_: 'session token',
  plt_: 'API token',
  plc_: 'MFA challenge',
  plr_: 'reset token',
  pli_: 'invite token',
}
const MAILED_KINDS = new Set(['reset token', 'invite token'])
const MAIL_CAPTURED = '"msg":"mail captured (no SMTP_URL)"'

const RECOVERY = '[0-9a-hjkmnp-tv-z]{4}'
const SHAPES: readonly { pattern: RegExp; kind: (match: string) => string }[] = [
  { pattern: /pl[tscri]_[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])/, kind: (m) => PREFIX_KIND[m.slice(0, 4)]! },
  { pattern: /otpauth:\/\//i, kind: () => 'TOTP secret (otpauth URI)' },
  { pattern: /\$argon2(?:id|i|d)\$/, kind: () => 'password hash' },
  {
    pattern: new RegExp(`(?<![0-9a-z-])${RECOVERY}(?:-${RECOVERY}){3}(?![0-9a-z-])`, 'i'),
    kind: () => 'recovery code',
  },
  {
    // A TOTP code is too short to be recorded as a known value (it would match ids by chance), so
    // only a code-named field holding 6 to 8 digits counts: error codes and SQLSTATEs never do.
    pattern: /"(?:code|codes|otp|totp|[\w-]*(?:otp|mfa|totp)[-_]?code)"\s*:\s*\[?\s*"\d{6,8}"/i,
    kind: () => 'TOTP code',
  },
  { pattern: /\b(?:bearer|basic)\s+[A-Za-z0-9._~+/=-]{16,}/i, kind: () => 'credentials (Authorization)' },
  {
    pattern: /"[\w-]*(?:master|private|data|secret)[-_]?key[\w-]*"\s*:\s*"[A-Za-z0-9+/_-]{43}=?"/i,
    kind: () => 'master key',
  },
  {
    pattern:
      /\bPLINTH_(?:MASTER_KEY(?:_PREVIOUS)?|SECRET_KEY|OPS_TOKEN|ADMIN_PASSWORD)\s*[=:]\s*"?[^\s"*]{8,}/,
    kind: () => 'secret configuration value',
  },
]

// An independent list (not the logger's SENSITIVE_KEY): the fields that must always read [redacted].
const SECRET_FIELDS = new Set([
  'password',
  'newpassword',
  'currentpassword',
  'adminpassword',
  'token',
  'sessiontoken',
  'csrftoken',
  'xcsrftoken',
  'apitoken',
  'resettoken',
  'invitetoken',
  'challenge',
  'secret',
  'totpsecret',
  'secretkey',
  'masterkey',
  'recoverycode',
  'recoverycodes',
  'authorization',
  'cookie',
  'setcookie',
  'opstoken',
])
const FIELD_HINT = /"[\w-]*(?:password|token|secret|challenge|key|recovery|authorization|cookie)[\w-]*"\s*:/i

function unredactedField(value: unknown, depth = 0): string | undefined {
  if (value === null || typeof value !== 'object' || depth > 10) return undefined
  for (const [key, v] of Object.entries(value)) {
    if (SECRET_FIELDS.has(key.toLowerCase().replace(/[-_]/g, ''))) {
      const values = [v].flat()
      if (values.some((x) => typeof x === 'string' && x !== '' && x !== '[redacted]')) return key
    }
    const inner = unredactedField(v, depth + 1)
    if (inner) return inner
  }
  return undefined
}

// Known secrets are found by windows: every secret is at least MIN_SECRET_LENGTH long, so it covers
// a window of WINDOW characters starting at a multiple of STRIDE; only those positions are looked up.
const WINDOW = 6
const STRIDE = MIN_SECRET_LENGTH - WINDOW + 1

interface Known {
  readonly secret: string
  readonly kind: string
  readonly offset: number
}

function indexSecrets(secrets: ReadonlyMap<string, string>): Map<string, Known[]> {
  const index = new Map<string, Known[]>()
  for (const [secret, kind] of secrets) {
    for (let offset = 0; offset + WINDOW <= secret.length; offset++) {
      const window = secret.slice(offset, offset + WINDOW)
      const list = index.get(window)
      if (list) list.push({ secret, kind, offset })
      else index.set(window, [{ secret, kind, offset }])
    }
  }
  return index
}

function knownIn(line: string, index: ReadonlyMap<string, Known[]>): string | undefined {
  for (let at = 0; at + WINDOW <= line.length; at += STRIDE) {
    const candidates = index.get(line.slice(at, at + WINDOW))
    if (!candidates) continue
    for (const { secret, kind, offset } of candidates) {
      if (at >= offset && line.startsWith(secret, at - offset)) return kind
    }
  }
  return undefined
}

/** The secrets recorded in `dir` (`*.secrets.ndjson`), each with its kind. */
export function readSecrets(dir: string): Map<string, string> {
  const secrets = new Map<string, string>()
  for (const name of readdirSync(dir)
    .filter((n) => n.endsWith('.secrets.ndjson'))
    .sort()) {
    for (const line of readFileSync(join(dir, name), 'utf8').split('\n')) {
      if (!line) continue
      try {
        const { kind, value } = JSON.parse(line) as { kind: string; value: string }
        if (typeof value === 'string' && value.length >= MIN_SECRET_LENGTH && !secrets.has(value))
          secrets.set(value, kind)
      } catch {
        // A line cut by a killed process: the rest of the file still counts.
      }
    }
  }
  return secrets
}

/** The leak on one log line, if any. */
function leakIn(line: string, index: ReadonlyMap<string, Known[]>): Omit<Leak, 'file' | 'line'> | undefined {
  const mailed = line.includes(MAIL_CAPTURED)
  const known = knownIn(line, index)
  if (known && !(mailed && MAILED_KINDS.has(known))) return { kind: known, foundBy: 'known value' }
  for (const { pattern, kind } of SHAPES) {
    const match = pattern.exec(line)
    if (match && !(mailed && MAILED_KINDS.has(kind(match[0]))))
      return { kind: kind(match[0]), foundBy: 'shape' }
  }
  if (FIELD_HINT.test(line)) {
    let parsed: unknown
    try {
      parsed = JSON.parse(line)
    } catch {
      return undefined
    }
    const field = unredactedField(parsed)
    if (field) return { kind: `unredacted "${field}"`, foundBy: 'unredacted field' }
  }
  return undefined
}

/** Scans every `*.log.ndjson` in `dir` for the secrets recorded there and for secret shapes. */
export function scanLogs(dir: string): ScanResult {
  const secrets = readSecrets(dir)
  const index = indexSecrets(secrets)
  const leaks: Leak[] = []
  let files = 0
  let lines = 0
  for (const file of readdirSync(dir)
    .filter((n) => n.endsWith('.log.ndjson'))
    .sort()) {
    files++
    const text = readFileSync(join(dir, file), 'utf8').split('\n')
    for (let i = 0; i < text.length; i++) {
      const line = text[i]!
      if (!line) continue
      lines++
      const leak = leakIn(line, index)
      if (leak) leaks.push({ file, line: i + 1, ...leak })
    }
  }
  return { files, lines, secrets: secrets.size, leaks }
}

/** A report of the leaks (file:line, kind, how found), never the secrets themselves. */
export function formatLeaks(result: ScanResult, dir: string, max = 50): string {
  const shown = result.leaks
    .slice(0, max)
    .map((l) => `  ${join(dir, l.file)}:${l.line}: ${l.kind} (${l.foundBy})`)
  const more = result.leaks.length > max ? [`  … and ${result.leaks.length - max} more`] : []
  return [
    `log scan: ${result.leaks.length} log line(s) hold a secret (of ${result.lines} lines in ${result.files} files):`,
    ...shown,
    ...more,
  ].join('\n')
}
