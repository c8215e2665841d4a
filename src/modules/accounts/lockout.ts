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

/**
 * How long a reserved check counts as running. A check settles in well under a second (one argon2id
 * verification); a reservation whose process died stops counting after this lease.
 */
export const CHECK_LEASE_MS = 60_000
/** How long an attempt waits for running checks to settle before it is refused (429, retry in 1 s). */
export const BUSY_WAIT_MS = 10_000

/**
 * Whether one more check may start now, given the failures so far and the checks still running.
 * Every running check is presumed to fail: the new one may start only if those failures would not
 * lock the account. So a burst starts at most the checks that sequential attempts could have made
 * before the next lock (five from zero; one at a time once the free failures are spent), and the
 * rest wait for the running ones to settle instead of being counted as failures.
 */
export function mayStartCheck(failures: number, inFlight: number): boolean {
  return inFlight === 0 || lockAfter(failures + inFlight, 0) === null
}

export function remainingLockMs(lockedUntil: Date | null, now: number): number {
  return lockedUntil ? Math.max(0, lockedUntil.getTime() - now) : 0
}

/**
 * Attempts waiting for running checks of the same account to settle: woken by a settlement in this
 * process, and polling (25 ms doubling to 200 ms) for settlements in other processes.
 */
export function createCheckWaiters() {
  const waiting = new Map<string, Set<() => void>>()
  return {
    /** Wakes the attempts waiting on `key` in this process. */
    notify(key: string): void {
      const set = waiting.get(key)
      if (!set) return
      waiting.delete(key)
      for (const wake of set) wake()
    },
    /**
     * Runs `attempt` until it answers something other than 'busy', waiting between tries, for at
     * most BUSY_WAIT_MS; 'busy' when running checks still held the account then.
     */
    async untilFree<T>(key: string, attempt: () => Promise<T | 'busy'>): Promise<T | 'busy'> {
      const deadline = performance.now() + BUSY_WAIT_MS
      let pause = 25
      for (;;) {
        // Registered before the try, so that a settlement during it is not missed.
        let wake = () => {}
        const woken = new Promise<void>((resolve) => {
          wake = resolve
        })
        const set = waiting.get(key) ?? new Set<() => void>()
        waiting.set(key, set)
        set.add(wake)
        try {
          const result = await attempt()
          const left = deadline - performance.now()
          if (result !== 'busy' || left <= 0) return result
          let timer: NodeJS.Timeout | undefined
          await Promise.race([
            woken,
            new Promise<void>((resolve) => {
              timer = setTimeout(resolve, Math.min(pause, left))
            }),
          ])
          clearTimeout(timer)
          pause = Math.min(200, pause * 2)
        } finally {
          const current = waiting.get(key)
          current?.delete(wake)
          if (current?.size === 0) waiting.delete(key)
        }
      }
    },
  }
}

/** What the cache holds per unknown address. */
interface StoredFailures {
  failures: number
  lockedUntil: string | null
}

/**
 * Failures for e-mail addresses that have no account are counted too (in the cache), so that an
 * unknown address locks exactly like a known one and the lock reveals nothing. Its attempts follow
 * the same rule as a known account's (`mayStartCheck`): the (dummy) checks running at an address
 * are counted in this process, a burst starts as many as it would for a known account and the rest
 * wait for them to settle, then see the lock their failures set. The attempts at one address take
 * turns in this process to read and write the count, and each failure is counted in one step of
 * the cache (`Cache.update`), so replicas sharing Redis lose none either. What stays per process is
 * the count of checks running: a burst spread over replicas can start up to that many checks on
 * each before the failures lock the address.
 */
export function createUnknownAccountCounter(cache: Cache) {
  const key = (email: string) => `login-failures:${email}`
  const ttl = 24 * 3_600_000
  const turns = new Map<string, Promise<unknown>>()
  const inFlight = new Map<string, number>()
  const waiters = createCheckWaiters()
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
    const v = await cache.get<StoredFailures>(key(email))
    return { failures: v?.failures ?? 0, lockedUntil: v?.lockedUntil ? new Date(v.lockedUntil) : null }
  }
  return {
    get: read,
    /**
     * Starts a (dummy) check at an unknown address, once the checks running there leave room for
     * it; or how long the address is locked (nothing counted then).
     */
    async reserve(email: string, now: () => number): Promise<{ reserved: true } | { lockedMs: number }> {
      const result = await waiters.untilFree(email, () =>
        inTurn(email, async (): Promise<{ reserved: true } | { lockedMs: number } | 'busy'> => {
          const current = await read(email)
          const lockedMs = remainingLockMs(current.lockedUntil, now())
          if (lockedMs > 0) return { lockedMs }
          const running = inFlight.get(email) ?? 0
          if (!mayStartCheck(current.failures, running)) return 'busy'
          inFlight.set(email, running + 1)
          return { reserved: true }
        }),
      )
      return result === 'busy' ? { lockedMs: 1000 } : result
    },
    /** The check failed (as it always does at an unknown address): the failure and its lock. */
    failed(email: string, now: () => number): Promise<{ failures: number; lockedUntil: Date | null }> {
      return inTurn(email, async () => {
        stopped(email)
        const at = now()
        try {
          // One step in the cache, so that replicas sharing Redis never both count from the same
          // value: every failure is counted, and a lock once set is never shortened.
          const stored = await cache.update<StoredFailures>(
            key(email),
            (current) => {
              const failures = (current?.failures ?? 0) + 1
              const lockedUntil = lockAfter(failures, at)
              const kept = current?.lockedUntil ? Date.parse(current.lockedUntil) : 0
              const until =
                lockedUntil && lockedUntil.getTime() > kept
                  ? lockedUntil.toISOString()
                  : (current?.lockedUntil ?? null)
              return { failures, lockedUntil: until }
            },
            ttl,
          )
          return {
            failures: stored.failures,
            lockedUntil: stored.lockedUntil ? new Date(stored.lockedUntil) : null,
          }
        } finally {
          waiters.notify(email)
        }
      })
    },
    /** The check could not run (it threw): it stops counting as running, nothing else changes. */
    released(email: string): void {
      stopped(email)
      waiters.notify(email)
    },
  }
  function stopped(email: string): void {
    const running = (inFlight.get(email) ?? 1) - 1
    if (running > 0) inFlight.set(email, running)
    else inFlight.delete(email)
  }
}
