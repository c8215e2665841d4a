import { type Kysely, sql } from 'kysely'
import { type Audit, auditEntryOf, type SecurityEventInput } from '../../core/audit.ts'
import type { SecurityEvents } from '../../core/security-events.ts'
import type { PlinthTables } from '../../infra/db/tables.ts'
import { PlinthError } from '../../shared/errors.ts'
import {
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

/** One reserved attempt at an account's password or second factor (see `createCredentialAttempts`). */
export interface Attempt {
  readonly userId: string
  /** The failure count with this attempt counted as a failure. */
  readonly failures: number
  /** The lock this attempt set, should it fail (null when it set none). */
  readonly lockedUntil: Date | null
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
 * An attempt is counted *before* the check, as a failure, by one conditional UPDATE that also sets
 * the lock that failure implies: concurrent attempts cannot all pass the check (30 parallel wrong
 * passwords: five are checked, the rest refused as locked), on PGlite as on PostgreSQL. The outcome
 * then settles the reservation:
 * - `failed`: it stays counted (and the lock it set stays);
 * - `released`: a right password that still needs a second factor: the reservation is taken back,
 *   but the count is NOT reset (second-factor failures accumulate across challenges);
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

  function lockedError(ms: number): PlinthError {
    return new PlinthError('PLINTH_AUTH_LOCKED', undefined, {
      headers: { 'retry-after': String(Math.max(1, Math.ceil(ms / 1000))) },
    })
  }

  return {
    lockedError,

    /**
     * Counts an attempt before the check; null when the account is locked (the check must not run)
     * or unknown, with the time left on the lock.
     */
    async reserve(userId: string): Promise<{ attempt: Attempt } | { lockedMs: number }> {
      const t = new Date(now())
      const row = await db
        .updateTable('users')
        .set((eb) => ({ failed_logins: eb('failed_logins', '+', 1), locked_until: lockAfterNext(t) }))
        .where('id', '=', userId)
        .where((eb) => eb.or([eb('locked_until', 'is', null), eb('locked_until', '<=', t)]))
        .returning(['failed_logins', 'locked_until'])
        .executeTakeFirst()
      if (row) return { attempt: { userId, failures: row.failed_logins, lockedUntil: row.locked_until } }
      const current = await db
        .selectFrom('users')
        .select('locked_until')
        .where('id', '=', userId)
        .executeTakeFirst()
      return { lockedMs: Math.max(1000, remainingLockMs(current?.locked_until ?? null, now())) }
    },

    /** Like `reserve`, but throws PLINTH_AUTH_LOCKED (429, Retry-After) when the account is locked. */
    async reserveOrThrow(userId: string): Promise<Attempt> {
      const r = await this.reserve(userId)
      if ('lockedMs' in r) throw lockedError(r.lockedMs)
      return r.attempt
    },

    /**
     * The check failed: the reservation stays counted. Records `login:locked-out` (audit and event)
     * when this failure locked the account.
     */
    async failed(attempt: Attempt, meta: AttemptMeta, details: Record<string, unknown> = {}): Promise<void> {
      if (!attempt.lockedUntil) return
      const event: SecurityEventInput = {
        type: 'login:locked-out',
        outcome: 'failure',
        actor: { type: 'user', id: attempt.userId },
        ip: meta.ip,
        userAgent: meta.userAgent,
        requestId: meta.requestId,
        details: {
          ...details,
          failures: attempt.failures,
          lockedUntil: attempt.lockedUntil.toISOString(),
        },
      }
      await audit.record(db, { ...auditEntryOf(event), target: { type: 'user', id: attempt.userId } })
      events.emit(event)
    },

    /**
     * A right password that still needs a second factor: the reservation is taken back (and the lock
     * it set, unless a later attempt replaced it); earlier failures stay counted.
     */
    async released(attempt: Attempt): Promise<void> {
      await db
        .updateTable('users')
        .set((eb) => ({
          failed_logins: sql<number>`greatest(${eb.ref('failed_logins')} - 1, 0)`,
          ...(attempt.lockedUntil
            ? {
                locked_until: eb
                  .case()
                  .when('locked_until', '=', attempt.lockedUntil)
                  .then(null)
                  .else(eb.ref('locked_until'))
                  .end(),
              }
            : {}),
        }))
        .where('id', '=', attempt.userId)
        .execute()
    },

    /** Fully authenticated: the failure count and the lock start again from zero. */
    async succeeded(attempt: Attempt): Promise<void> {
      await db
        .updateTable('users')
        .set({ failed_logins: 0, locked_until: null })
        .where('id', '=', attempt.userId)
        .execute()
    },
  }
}

export type CredentialAttempts = ReturnType<typeof createCredentialAttempts>
