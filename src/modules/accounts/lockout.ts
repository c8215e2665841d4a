import type { Cache } from '../../infra/cache/cache.ts'

/** Failures allowed before any delay. */
export const FREE_FAILURES = 5
/** Longest progressive lock. */
export const MAX_LOCK_MS = 15 * 60_000
/** NIST SP 800-63B: no more than 100 consecutive failures; then locked until a reset or an admin unlock. */
export const HARD_LOCK_FAILURES = 100
export const HARD_LOCK_UNTIL = new Date('9999-12-31T00:00:00Z')

/**
 * After FREE_FAILURES consecutive failures, each further one locks the account for twice as long
 * as the previous (1 s, 2 s, 4 s … up to MAX_LOCK_MS); at HARD_LOCK_FAILURES it stays locked.
 */
export function lockAfter(failures: number, now: number): Date | null {
  if (failures >= HARD_LOCK_FAILURES) return HARD_LOCK_UNTIL
  if (failures < FREE_FAILURES) return null
  return new Date(now + Math.min(MAX_LOCK_MS, 1000 * 2 ** (failures - FREE_FAILURES)))
}

export function remainingLockMs(lockedUntil: Date | null, now: number): number {
  return lockedUntil ? Math.max(0, lockedUntil.getTime() - now) : 0
}

/**
 * Failures for e-mail addresses that have no account are counted too (in the cache), so that an
 * unknown address locks exactly like a known one and the lock reveals nothing.
 */
export function createUnknownAccountCounter(cache: Cache) {
  const key = (email: string) => `login-failures:${email}`
  const ttl = 24 * 3_600_000
  return {
    async get(email: string): Promise<{ failures: number; lockedUntil: Date | null }> {
      const v = await cache.get<{ failures: number; lockedUntil: string | null }>(key(email))
      return { failures: v?.failures ?? 0, lockedUntil: v?.lockedUntil ? new Date(v.lockedUntil) : null }
    },
    async fail(email: string, now: number): Promise<{ failures: number; lockedUntil: Date | null }> {
      const failures = (await this.get(email)).failures + 1
      const lockedUntil = lockAfter(failures, now)
      await cache.set(key(email), { failures, lockedUntil: lockedUntil?.toISOString() ?? null }, ttl)
      return { failures, lockedUntil }
    },
  }
}
