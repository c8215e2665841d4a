import { createRequire } from 'node:module'
import argon2 from 'argon2'
import bcrypt from 'bcryptjs'
import { PlinthError } from '../../shared/errors.ts'

/**
 * argon2id with OWASP's minimum parameters (19 MiB, 2 iterations, 1 lane): ~40 ms per hash on
 * one core here, which bounds login throughput by design.
 */
export const ARGON2_OPTIONS = {
  type: argon2.argon2id,
  memoryCost: 19_456,
  timeCost: 2,
  parallelism: 1,
} as const

export const PASSWORD_MIN = 8
export const PASSWORD_MAX = 128

// The most common passwords (zxcvbn's list, ~50k entries), lower-cased, shipped as a dependency.
// Loaded at the first policy check, not at import: decompressing zxcvbn's dictionaries is ~50 ms
// of every start otherwise (decision 0039).
let common: Set<string> | undefined
function commonPasswords(): Set<string> {
  if (!common) {
    const { dictionary } = createRequire(import.meta.url)(
      '@zxcvbn-ts/language-common',
    ) as typeof import('@zxcvbn-ts/language-common')
    common = new Set((dictionary['passwords-common'] as string[]).map((p) => p.toLowerCase()))
  }
  return common
}

/** Throws PLINTH_AUTH_WEAK_PASSWORD when the password breaks the policy (length, common list). */
export function assertPasswordPolicy(password: string, context: { email?: string } = {}): void {
  const length = [...password].length
  const problem =
    length < PASSWORD_MIN
      ? `must be at least ${PASSWORD_MIN} characters`
      : length > PASSWORD_MAX
        ? `must be at most ${PASSWORD_MAX} characters`
        : commonPasswords().has(password.toLowerCase())
          ? 'is one of the most common passwords; choose another'
          : context.email && password.toLowerCase() === context.email.toLowerCase()
            ? 'must not be your e-mail address'
            : undefined
  if (problem) {
    throw new PlinthError('PLINTH_AUTH_WEAK_PASSWORD', `The password ${problem}.`, {
      errors: [{ in: 'body', field: 'password', message: problem }],
    })
  }
}

export function hashPassword(password: string): Promise<string> {
  return argon2.hash(password, ARGON2_OPTIONS)
}

/**
 * A bcrypt hash brought from another system (PocketBase, Supabase: `plinth import`), kept until the
 * next successful sign-in replaces it with an argon2id hash (docs/decisions/0020).
 */
export const LEGACY_BCRYPT = /^\$2[aby]\$(0[4-9]|[12]\d|3[01])\$[./A-Za-z0-9]{53}$/

/** Whether a stored hash is a legacy one that the next successful sign-in should replace. */
export function isLegacyHash(hash: string): boolean {
  return LEGACY_BCRYPT.test(hash)
}

export async function verifyPassword(hash: string, password: string): Promise<boolean> {
  try {
    // bcrypt reads at most 72 bytes of the password, as the system that made the hash did.
    if (isLegacyHash(hash)) return await bcrypt.compare(password, hash)
    return await argon2.verify(hash, password)
  } catch {
    return false
  }
}

let dummy: Promise<string> | undefined
/**
 * Verifies against a fixed hash of a random password: login for an unknown e-mail costs the same
 * argon2 work as a wrong password for a known one, so timing does not reveal who has an account.
 */
export async function burnPasswordCheck(password: string): Promise<void> {
  dummy ??= hashPassword(crypto.randomUUID())
  await verifyPassword(await dummy, password)
}
