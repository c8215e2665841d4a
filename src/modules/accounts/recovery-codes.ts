import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'

/**
 * Single-use recovery codes, the way in when the authenticator is lost.
 *
 * A code is 16 characters of Crockford's base32 in four groups, `7k2m-q9xd-4hvr-t0bz`: 80 random
 * bits. The alphabet has no i, l, o or u; when reading a code, case, dashes and spaces are ignored
 * and i/l read as 1, o as 0, so what a user copies by hand still matches.
 *
 * Hashing: SHA-256 with a random 16-byte salt per code, stored as `sha256$<salt>$<digest>`
 * (base64url). A fast hash is enough here, unlike for passwords: the codes are random with 80
 * bits of entropy, so there is no dictionary to try, and the salt makes every stored hash its own
 * 2^80 search. Argon2 would only slow down logins.
 */

/** Crockford's base32 alphabet, lower-case: 32 symbols, so one random byte & 31 picks uniformly. */
const ALPHABET = '0123456789abcdefghjkmnpqrstvwxyz'
const CODE_LENGTH = 16
const GROUP = 4
const SALT_BYTES = 16
const PREFIX = 'sha256'

/** Number of codes a user gets. */
export const RECOVERY_CODE_COUNT = 10

const READ_AS: Readonly<Record<string, string>> = { i: '1', l: '1', o: '0' }

/**
 * The canonical form of a typed code (16 lower-case alphabet characters, no separators), or
 * undefined when it cannot be a recovery code. Use it to tell a recovery code from a 6-digit TOTP
 * code typed into the same field.
 */
export function normalizeRecoveryCode(code: string): string | undefined {
  if (typeof code !== 'string' || code.length > 64) return undefined
  const canonical = code
    .toLowerCase()
    .replace(/[\s-]/g, '')
    .replace(/[ilo]/g, (c) => READ_AS[c]!)
  if (canonical.length !== CODE_LENGTH) return undefined
  for (const c of canonical) if (!ALPHABET.includes(c)) return undefined
  return canonical
}

function randomCode(): string {
  let code = ''
  for (const byte of randomBytes(CODE_LENGTH)) code += ALPHABET[byte & 31]
  return code.match(new RegExp(`.{${GROUP}}`, 'g'))!.join('-')
}

function digest(salt: Buffer, canonical: string): Buffer {
  return createHash('sha256').update(salt).update(canonical, 'ascii').digest()
}

/**
 * The stored form of a code: `sha256$<salt>$<digest>`. Salted, so hashing the same code twice
 * gives different strings: find a code with `matchRecoveryCode`, not by looking a hash up.
 * @throws TypeError when `code` is not a recovery code (see `normalizeRecoveryCode`).
 */
export function hashRecoveryCode(code: string): string {
  const canonical = normalizeRecoveryCode(code)
  if (canonical === undefined) throw new TypeError('not a recovery code')
  const salt = randomBytes(SALT_BYTES)
  return `${PREFIX}$${salt.toString('base64url')}$${digest(salt, canonical).toString('base64url')}`
}

/**
 * `n` new codes to show the user once, and their hashes to store, in the same order. The codes of
 * one set are distinct.
 *
 * @example
 * const { codes, hashes } = generateRecoveryCodes()
 * // codes: ['7k2m-q9xd-4hvr-t0bz', …] (show, then forget); hashes: store, one row each
 */
export function generateRecoveryCodes(n: number = RECOVERY_CODE_COUNT): {
  codes: string[]
  hashes: string[]
} {
  if (!Number.isInteger(n) || n < 1 || n > 100) throw new RangeError('n must be an integer from 1 to 100')
  const codes = new Set<string>()
  while (codes.size < n) codes.add(randomCode())
  return { codes: [...codes], hashes: [...codes].map(hashRecoveryCode) }
}

/**
 * The index in `hashes` of the one `code` matches, or -1. Every hash is checked, in constant time
 * each, whatever matches; a malformed code matches nothing, and a malformed stored hash is skipped.
 * The caller consumes the matched code (deletes or marks that row used) in the same transaction
 * that accepts the login, so that it works once.
 */
export function matchRecoveryCode(code: string, hashes: readonly string[]): number {
  const canonical = normalizeRecoveryCode(code)
  if (canonical === undefined) return -1
  let found = -1
  for (const [index, stored] of hashes.entries()) {
    const [prefix, salt, expected, ...rest] = stored.split('$')
    if (prefix !== PREFIX || salt === undefined || expected === undefined || rest.length > 0) continue
    const want = Buffer.from(expected, 'base64url')
    const got = digest(Buffer.from(salt, 'base64url'), canonical)
    if (want.length === got.length && timingSafeEqual(want, got) && found === -1) found = index
  }
  return found
}
