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
 * unknown address locks exactly like a known one and the lock reveals nothing. Like a known
 * account's, an attempt is counted (as a failure, with the lock it implies) before the check, and
 * the attempts at one address take turns in this process, so that a burst of parallel attempts
 * splits into checked and locked ones as it does for a known account. Across replicas sharing
 * Redis the count is not atomic (the cache has no increment): a difference there needs parallel
 * bursts spread over replicas.
 */
export function createUnknownAccountCounter(cache: Cache) {
  const key = (email: string) => `login-failures:${email}`
  const ttl = 24 * 3_600_000
  const turns = new Map<string, Promise<unknown>>()
  /** Runs `task` after every earlier task for the same address (in this process). */
  function inTurn<T>(email: string, task: () => Promise<T>): Promise<T> {
    const result = (turns.get(email) ?? Promise.resolve()).then(task)
    const tail = result.catch(() => {})
    turns.set(email, tail)
    void tail.then(() => {
      if (turns.get(email) === tail) turns.delete(email)
    })
    return result
  }
  const read = async (email: string): Promise<{ failures: number; lockedUntil: Date | null }> => {
    const v = await cache.get<{ failures: number; lockedUntil: string | null }>(key(email))
    return { failures: v?.failures ?? 0, lockedUntil: v?.lockedUntil ? new Date(v.lockedUntil) : null }
  }
  return {
    get: read,
    /**
     * Counts an attempt at an unknown address before the (dummy) check: the failure count and lock
     * after it, or how long the address is still locked (nothing counted then).
     */
    reserve(
      email: string,
      now: number,
    ): Promise<{ failures: number; lockedUntil: Date | null } | { lockedMs: number }> {
      return inTurn(email, async () => {
        const current = await read(email)
        const lockedMs = remainingLockMs(current.lockedUntil, now)
        if (lockedMs > 0) return { lockedMs }
        const failures = current.failures + 1
        const lockedUntil = lockAfter(failures, now)
        await cache.set(key(email), { failures, lockedUntil: lockedUntil?.toISOString() ?? null }, ttl)
        return { failures, lockedUntil }
      })
    },
  }
}
