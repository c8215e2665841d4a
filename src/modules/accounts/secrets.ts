import { hash, randomBytes, timingSafeEqual } from 'node:crypto'
import { normalizeEmail } from '../../core/identity.ts'

/**
 * Prefixes make Plinth's secrets recognisable to secret scanners and to people: a leaked
 * `plt_…` in a repository is a Plinth API token.
 */
export const TOKEN_PREFIX = {
  apiToken: 'plt_',
  session: 'pls_',
  challenge: 'plc_',
  reset: 'plr_',
  invite: 'pli_',
} as const

/** A new opaque secret: prefix + 256 random bits, base64url. Only its hash is stored. */
export function newSecret(prefix: string): { secret: string; hash: string } {
  const secret = `${prefix}${randomBytes(32).toString('base64url')}`
  return { secret, hash: hashSecret(secret) }
}

/** SHA-256 is enough for 256-bit random secrets: there is nothing to brute-force. */
export function hashSecret(secret: string): string {
  // One-shot hash: no Hash object per call (every authenticated request hashes its credential).
  return hash('sha256', secret, 'base64url')
}

/** Shape check before any lookup: right prefix, right length, URL-safe characters only. */
export function looksLikeSecret(value: string, prefix: string): boolean {
  return (
    value.length === prefix.length + 43 &&
    value.startsWith(prefix) &&
    /^[A-Za-z0-9_-]+$/.test(value.slice(prefix.length))
  )
}

export function safeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a)
  const y = Buffer.from(b)
  return x.length === y.length && timingSafeEqual(x, y)
}

/** E-mail addresses compare case-insensitively (RFC 5321 local parts rarely differ by case). */
export { normalizeEmail }
