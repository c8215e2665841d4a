import { timingSafeEqual } from 'node:crypto'
import { generateSecret, generateSync, generateURI } from 'otplib'

/**
 * TOTP second factors (RFC 6238) with the parameters every authenticator app assumes: HMAC-SHA-1,
 * 6 digits, 30-second steps counted from the Unix epoch. These functions are pure (no storage, no
 * clock unless `now` is omitted); the accounts service keeps the secret (encrypted) and the last
 * accepted step, and counts failures.
 */

/** Seconds per time step. */
export const TOTP_PERIOD = 30
/** Digits in a code. */
export const TOTP_DIGITS = 6
/** Steps accepted either side of the current one, for clock drift and typing time. */
export const TOTP_WINDOW = 1
/** Issuer shown in authenticator apps. */
export const TOTP_ISSUER = 'Plinth'

/**
 * A new random secret: 20 bytes (160 bits, the RFC 4226 recommendation), as 32 base32 characters,
 * the form authenticator apps and otpauth:// URIs take. Store it encrypted (see the keyring).
 */
export function createTotpSecret(): string {
  return generateSecret({ length: 20 })
}

/**
 * The time step a moment falls in: floor(seconds since the epoch / 30).
 * @param now milliseconds since the epoch, as `Date.now()`.
 */
export function totpStep(now: number = Date.now()): number {
  return Math.floor(now / 1000 / TOTP_PERIOD)
}

/**
 * The `otpauth://totp/…` URI an authenticator app enrols from (as a QR code, or pasted):
 * `otpauth://totp/Plinth:<accountName>?secret=…&issuer=Plinth`, label and issuer URL-encoded.
 * The defaults (SHA1, 6 digits, 30 s) are left implicit, as apps expect.
 *
 * @example
 * otpauthUri({ secret, accountName: 'ada@example.com' })
 * // 'otpauth://totp/Plinth:ada%40example.com?secret=…&issuer=Plinth'
 */
export function otpauthUri(options: { secret: string; accountName: string; issuer?: string }): string {
  return generateURI({
    issuer: options.issuer ?? TOTP_ISSUER,
    label: options.accountName,
    secret: options.secret,
    algorithm: 'sha1',
    digits: TOTP_DIGITS,
    period: TOTP_PERIOD,
  })
}

/**
 * A QR code of `uri` as a standalone SVG document (`<svg …>…</svg>`), to show while enrolling.
 * It carries the secret: send it only to the user enrolling, never cache or log it.
 */
export async function qrCodeSvg(uri: string): Promise<string> {
  // Loaded at the first enrolment rather than at start (decision 0034).
  const { default: QRCode } = await import('qrcode')
  return QRCode.toString(uri, { type: 'svg', errorCorrectionLevel: 'M', margin: 2 })
}

function codeAtStep(secret: string, step: number): string {
  return generateSync({
    secret,
    epoch: step * TOTP_PERIOD,
    algorithm: 'sha1',
    digits: TOTP_DIGITS,
    period: TOTP_PERIOD,
  })
}

/**
 * The code for `secret` at `now` (milliseconds; default: the current time). For tests and tools:
 * the server never needs to show a code.
 * @throws when `secret` is not base32 or decodes to fewer than 16 bytes.
 */
export function generateTotp(secret: string, now: number = Date.now()): string {
  return codeAtStep(secret, totpStep(now))
}

export type TotpVerification =
  | { readonly ok: true; readonly step: number }
  | { readonly ok: false; readonly reason: 'invalid' | 'replayed' | 'malformed' }

const CODE = /^\d{6}$/

/**
 * Checks a code the user typed against `secret`.
 *
 * - `malformed`: not six digits once spaces are removed (apps show `123 456`). Nothing is computed
 *   and nothing throws, whatever the input.
 * - `replayed`: the code is right, but for a step at or before `lastUsedStep`: RFC 6238 §5.2
 *   requires a code to be accepted once, and an older code after a newer one is refused too.
 * - `invalid`: the code matches no step from current − 1 to current + 1.
 * - `ok`: accepted; store `step` as the new `lastUsedStep` in the same transaction that accepts
 *   the login, with a conditional update (`WHERE last_used_step IS NULL OR last_used_step < step`)
 *   so two concurrent requests cannot both use the code.
 *
 * `replayed` and `invalid` both count as failures; the accounts service limits them per challenge.
 * The code is compared in constant time with every step of the window, without stopping at a match.
 *
 * @param lastUsedStep the step of the last accepted code, or null before the first.
 * @param now milliseconds since the epoch (default: the current time).
 * @throws only when `secret` itself is not a valid base32 secret (a bug or corrupt data).
 */
export function verifyTotp(options: {
  secret: string
  code: string
  lastUsedStep: number | null
  now?: number
}): TotpVerification {
  const { secret, lastUsedStep } = options
  const code = typeof options.code === 'string' ? options.code.replace(/[ \t]/g, '') : ''
  if (!CODE.test(code)) return { ok: false, reason: 'malformed' }
  const given = Buffer.from(code, 'ascii')
  const current = totpStep(options.now)
  let accepted: number | undefined
  let replayed = false
  for (let step = current - TOTP_WINDOW; step <= current + TOTP_WINDOW; step++) {
    // Every step is computed and compared, so timing does not tell which step matched.
    const matches = timingSafeEqual(Buffer.from(codeAtStep(secret, step), 'ascii'), given)
    if (!matches) continue
    if (lastUsedStep !== null && step <= lastUsedStep) replayed = true
    else accepted ??= step
  }
  if (accepted !== undefined) return { ok: true, step: accepted }
  return { ok: false, reason: replayed ? 'replayed' : 'invalid' }
}
