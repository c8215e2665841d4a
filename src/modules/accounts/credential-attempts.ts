import { type Kysely, sql } from 'kysely'
import { type Audit, auditEntryOf, type SecurityEventInput } from '../../core/audit.ts'
import type { SecurityEvents } from '../../core/security-events.ts'
import type { PlinthTables } from '../../infra/db/tables.ts'
import { PlinthError } from '../../shared/errors.ts'
import {
  CHECK_LEASE_MS,
  createCheckWaiters,
  FREE_FAILURES,
  HARD_LOCK_FAILURES,
  HARD_LOCK_UNTIL,
  MAX_LOCK_MS,
  remainingLockMs,
} from './lockout.ts'

/**
 * `lockAfter(failed_logins + 1, now)` in SQL (lockout.ts is the reference; a test compares both),
 * so that the count and the lock it implies are written by one statement.
 */
const lockAfterNext = (now: Date) => sql<Date | null>`case
  when failed_logins + 1 >= ${HARD_LOCK_FAILURES} then ${HARD_LOCK_UNTIL}::timestamptz
  when failed_logins + 1 < ${FREE_FAILURES} then null
  else ${now}::timestamptz + least(${MAX_LOCK_MS}::float8, 1000 * power(2::float8, failed_logins + 1 - ${FREE_FAILURES})) * interval '1 millisecond'
end`

/** The checks still running at `now`: none once their lease has run out (their process died). */
const running = (now: Date) =>
  sql<number>`(case when checks_in_flight_until > ${now}::timestamptz then checks_in_flight else 0 end)`

/**
 * `mayStartCheck(failed_logins, running)` in SQL: no check running, or the running ones, should
 * they all fail, would not lock the account (lockAfter is null below FREE_FAILURES).
 */
const mayStart = (now: Date) =>
  sql<boolean>`(${running(now)} = 0 or failed_logins + ${running(now)} < ${FREE_FAILURES})`

/**
 * The running count once `attempt` has settled. Its own lease run out, it is not taken off: it
 * was forgotten with its lease, or newer reservations kept the lease alive and it stays counted
 * until that lease ends (never fewer running checks than there are).
 */
const settledCount = (attempt: Attempt, now: Date) =>
  sql<number>`(case when checks_in_flight_until > ${now}::timestamptz and ${attempt.leaseEnds}::timestamptz > ${now}::timestamptz
    then greatest(checks_in_flight - 1, 0) else ${running(now)} end)`

/** One running check of an account's password or second factor (see `createCredentialAttempts`). */
export interface Attempt {
  readonly userId: string
  /** The end of its reservation's lease. */
  readonly leaseEnds: Date
}

export interface AttemptMeta {
  readonly ip?: string | undefined
  readonly userAgent?: string | undefined
  readonly requestId?: string | undefined
}

/**
 * Every check of an account's password or second factor — sign-in, the MFA step, changing the
 * password, turning MFA off, erasing the account — goes through here, so that they all count
 * towards one lockout and all honour it.
 *
 * An attempt reserves its check *before* the check, by one conditional UPDATE that counts it as
 * running (`checks_in_flight`, under a lease of CHECK_LEASE_MS): it may start only if the account
 * is not locked and the checks already running, should they all fail, would not lock it
 * (`mayStartCheck`). So concurrent attempts cannot check more guesses than sequential ones could
 * before the next lock (30 parallel wrong passwords: five are checked, the rest wait for them and
 * are then refused as locked), on PGlite as on PostgreSQL; and an attempt that finds no room waits
 * for the running checks to settle (at most BUSY_WAIT_MS) instead of being refused — a right
 * password is never counted as a failure, not even while it is being checked. The outcome then
 * settles the reservation (it stops running) in one UPDATE:
 * - `failed`: a failure is counted, with the lock it implies;
 * - `released`: a right password that still needs a second factor: nothing else changes (earlier
 *   failures stay counted: second-factor failures accumulate across challenges);
 * - `succeeded`: the account is fully authenticated (password, and the second factor when enrolled):
 *   the count and the lock are cleared.
 */
export function createCredentialAttempts(deps: {
  db: Kysely<PlinthTables>
  audit: Audit
  events: SecurityEvents
  now?: () => number
}) {
  const { db, audit, events } = deps
  const now = deps.now ?? Date.now
  const waiters = createCheckWaiters()

  function lockedError(ms: number): PlinthError {
    return new PlinthError('PLINTH_AUTH_LOCKED', undefined, {
      headers: { 'retry-after': String(Math.max(1, Math.ceil(ms / 1000))) },
    })
  }

  /** One try at reserving a check: the attempt, the time left on the lock, or 'busy'. */
  async function tryReserve(userId: string): Promise<{ attempt: Attempt } | { lockedMs: number } | 'busy'> {
    const t = new Date(now())
    const leaseEnds = new Date(t.getTime() + CHECK_LEASE_MS)
    const row = await db
      .updateTable('users')
      .set({ checks_in_flight: sql<number>`${running(t)} + 1`, checks_in_flight_until: leaseEnds })
      .where('id', '=', userId)
      .where((eb) => eb.or([eb('locked_until', 'is', null), eb('locked_until', '<=', t)]))
      .where(mayStart(t))
      .returning('id')
      .executeTakeFirst()
    if (row) return { attempt: { userId, leaseEnds } }
    const current = await db
      .selectFrom('users')
      .select(['locked_until', 'failed_logins', 'checks_in_flight', 'checks_in_flight_until'])
      .where('id', '=', userId)
      .executeTakeFirst()
    if (!current) return { lockedMs: 1000 }
    const lockedMs = remainingLockMs(current.locked_until, t.getTime())
    if (lockedMs > 0) return { lockedMs }
    return 'busy'
  }

  /** Settles `attempt` with `changes` and wakes the attempts waiting for the account here. */
  async function settle(
    attempt: Attempt,
    changes: (t: Date) => Record<string, unknown>,
  ): Promise<{ failed_logins: number; locked_until: Date | null } | undefined> {
    const t = new Date(now())
    try {
      return await db
        .updateTable('users')
        .set({ checks_in_flight: settledCount(attempt, t), ...changes(t) })
        .where('id', '=', attempt.userId)
        .returning(['failed_logins', 'locked_until'])
        .executeTakeFirst()
    } finally {
      waiters.notify(attempt.userId)
    }
  }

  return {
    lockedError,

    /**
     * Reserves a check, waiting while the checks already running leave no room for it; the time
     * left on the lock when the account is locked (the check must not run) or unknown, or 1 s when
     * running checks still left no room after BUSY_WAIT_MS.
     */
    async reserve(userId: string): Promise<{ attempt: Attempt } | { lockedMs: number }> {
      const result = await waiters.untilFree(userId, () => tryReserve(userId))
      return result === 'busy' ? { lockedMs: 1000 } : result
    },

    /** Like `reserve`, but throws PLINTH_AUTH_LOCKED (429, Retry-After) when the account is locked. */
    async reserveOrThrow(userId: string): Promise<Attempt> {
      const r = await this.reserve(userId)
      if ('lockedMs' in r) throw lockedError(r.lockedMs)
      return r.attempt
    },

    /**
     * The check failed: one more failure, with the lock it implies. Runs `first` with the new count
     * (the caller records its own failure event there), then records `login:locked-out` (audit and
     * event) when this failure locked the account; returns the count and the lock.
     */
    async failed(
      attempt: Attempt,
      meta: AttemptMeta,
      details: Record<string, unknown> = {},
      first?: (state: { failures: number; lockedUntil: Date | null }) => Promise<void>,
    ): Promise<{ failures: number; lockedUntil: Date | null }> {
      const row = await settle(attempt, (t) => ({
        failed_logins: sql<number>`failed_logins + 1`,
        locked_until: lockAfterNext(t),
      }))
      const state = { failures: row?.failed_logins ?? 0, lockedUntil: row?.locked_until ?? null }
      await first?.(state)
      if (!state.lockedUntil) return state
      const event: SecurityEventInput = {
        type: 'login:locked-out',
        outcome: 'failure',
        actor: { type: 'user', id: attempt.userId },
        ip: meta.ip,
        userAgent: meta.userAgent,
        requestId: meta.requestId,
        details: {
          ...details,
          failures: state.failures,
          lockedUntil: state.lockedUntil.toISOString(),
        },
      }
      await audit.record(db, { ...auditEntryOf(event), target: { type: 'user', id: attempt.userId } })
      events.emit(event)
      return state
    },

    /**
     * A right password that still needs a second factor, or a check that could not run (it threw):
     * the reservation ends, and nothing else changes (earlier failures stay counted).
     */
    async released(attempt: Attempt): Promise<void> {
      await settle(attempt, () => ({}))
    },

    /**
     * Runs the check of a reserved attempt; should it throw (the database, argon2), the reservation
     * ends, counted neither way, and the error goes on.
     */
    async checking<T>(attempt: Attempt, check: () => Promise<T>): Promise<T> {
      try {
        return await check()
      } catch (err) {
        await this.released(attempt).catch(() => {})
        throw err
      }
    },

    /** Fully authenticated: the failure count and the lock start again from zero. */
    async succeeded(attempt: Attempt): Promise<void> {
      await settle(attempt, () => ({ failed_logins: 0, locked_until: null }))
    },
  }
}

export type CredentialAttempts = ReturnType<typeof createCredentialAttempts>
