import type { Kysely } from 'kysely'
import { type Audit, auditEntryOf, type SecurityEventInput } from '../../core/audit.ts'
import type { Actor, SecurityEvents } from '../../core/security-events.ts'
import type { Cache } from '../../infra/cache/cache.ts'
import type { PlinthTables } from '../../infra/db/tables.ts'
import { PlinthError } from '../../shared/errors.ts'
import type { User } from './accounts.tables.ts'
import { type Attempt, type CredentialAttempts, createCredentialAttempts } from './credential-attempts.ts'
import { createUnknownAccountCounter } from './lockout.ts'
import { burnPasswordCheck, hashPassword, isLegacyHash, verifyPassword } from './passwords.ts'
import { hashSecret, looksLikeSecret, newSecret, normalizeEmail, TOKEN_PREFIX } from './secrets.ts'
import type { SessionMeta, SessionService } from './sessions.service.ts'

export const CHALLENGE_TTL_MS = 5 * 60_000
export const MAX_CHALLENGE_FAILURES = 5

/** What the login flow needs from the second-factor service. */
export interface SecondFactor {
  isEnrolled(userId: string): Promise<boolean>
  /** Checks a TOTP or recovery code and consumes it (a code is accepted once). */
  consume(
    userId: string,
    input: { code?: string; recoveryCode?: string },
  ): Promise<'totp' | 'recovery' | null>
}

export interface RequestMeta extends SessionMeta {
  readonly requestId?: string
}

export type LoginResult =
  | { mfaRequired: true; challenge: string; challengeExpiresAt: Date; userId: string }
  | {
      mfaRequired: false
      token: string
      sessionId: string
      expiresAt: Date
      userId: string
      mfaEnrolmentRequired: boolean
    }

/**
 * Password sign-in with lockout, the second-factor challenge, and session issue. Unknown e-mail
 * addresses, disabled accounts and wrong passwords all cost one argon2 verification and give the
 * same answer.
 */
export function createLoginService(deps: {
  db: Kysely<PlinthTables>
  cache: Cache
  sessions: SessionService
  secondFactor: SecondFactor
  events: SecurityEvents
  audit: Audit
  /** The shared lockout of every password and second-factor check (one per instance). */
  attempts?: CredentialAttempts
  now?: () => number
}) {
  const { db, sessions, events, audit } = deps
  const now = deps.now ?? Date.now
  const unknown = createUnknownAccountCounter(deps.cache)
  const attempts = deps.attempts ?? createCredentialAttempts({ db, audit, events, now })

  const emitFor = (meta: RequestMeta, actor: Actor) => ({
    actor,
    ip: meta.ip,
    userAgent: meta.userAgent,
    requestId: meta.requestId,
  })

  /** The events of a failed attempt at an unknown address. */
  function failureEvents(
    actor: Actor,
    meta: RequestMeta,
    state: { failures: number; lockedUntil: Date | null },
  ): SecurityEventInput[] {
    const out: SecurityEventInput[] = [
      {
        type: 'login:failed',
        outcome: 'failure',
        ...emitFor(meta, actor),
        details: { failures: state.failures },
      },
    ]
    if (state.lockedUntil)
      out.push({
        type: 'login:locked-out',
        outcome: 'failure',
        ...emitFor(meta, actor),
        details: { failures: state.failures, lockedUntil: state.lockedUntil.toISOString() },
      })
    return out
  }

  /**
   * Counts a failed attempt at an unknown address (in the cache, audited on its own): it locks
   * exactly like a known account, so the lock reveals nothing.
   */
  async function recordUnknownFailure(
    email: string,
    meta: RequestMeta,
    state: { failures: number; lockedUntil: Date | null },
  ): Promise<void> {
    const emitted = failureEvents({ type: 'anonymous' }, meta, state)
    // The address someone tried is kept in the audit row (not in the event, which is logged).
    for (const event of emitted)
      await audit.record(db, { ...auditEntryOf(event), details: { ...event.details, email } })
    for (const event of emitted) events.emit(event)
  }

  /** A wrong password for a known account: `login:failed`, and `login:locked-out` when it locked it. */
  async function recordFailure(attempt: Attempt, meta: RequestMeta): Promise<void> {
    await attempts.failed(attempt, meta, {}, async (state) => {
      const event: SecurityEventInput = {
        type: 'login:failed',
        outcome: 'failure',
        ...emitFor(meta, { type: 'user', id: attempt.userId }),
        details: { failures: state.failures },
      }
      await audit.record(db, withTarget(event, attempt.userId))
      events.emit(event)
    })
  }

  /** A refusal because the account (or unknown address) is locked: audited, nothing checked. */
  async function refuseLocked(userId: string | undefined, email: string, meta: RequestMeta, ms: number) {
    const event: SecurityEventInput = {
      type: 'login:failed',
      outcome: 'failure',
      ...emitFor(meta, userId ? { type: 'user', id: userId } : { type: 'anonymous' }),
      details: { reason: 'locked' },
    }
    await audit.record(
      db,
      userId ? withTarget(event, userId) : { ...auditEntryOf(event), details: { reason: 'locked', email } },
    )
    events.emit(event)
    return attempts.lockedError(ms)
  }

  /** The audit entry of an event about a known account, naming it as the target. */
  const withTarget = (event: SecurityEventInput, userId: string) => ({
    ...auditEntryOf(event),
    target: { type: 'user', id: userId },
  })

  async function mfaRequiredByRole(user: User): Promise<boolean> {
    const policy = await db
      .selectFrom('role_policies')
      .select('mfa_required')
      .where('role', '=', user.role)
      .executeTakeFirst()
    return policy?.mfa_required ?? false
  }

  async function issueSession(user: User, meta: RequestMeta, method: string): Promise<LoginResult> {
    const enrolmentRequired =
      (await mfaRequiredByRole(user)) && !(await deps.secondFactor.isEnrolled(user.id))
    const { session, event } = await db.transaction().execute(async (trx) => {
      const session = await sessions.create(user.id, meta, { mfaEnrolmentPending: enrolmentRequired, trx })
      await trx
        .updateTable('users')
        .set({ last_login_at: new Date(now()) })
        .where('id', '=', user.id)
        .execute()
      const event: SecurityEventInput = {
        type: 'login:succeeded',
        outcome: 'success',
        ...emitFor(meta, { type: 'user', id: user.id }),
        target: { type: 'session', id: session.sessionId },
        details: { method },
      }
      await audit.record(trx, auditEntryOf(event))
      return { session, event }
    })
    events.emit(event)
    return { mfaRequired: false, ...session, userId: user.id, mfaEnrolmentRequired: enrolmentRequired }
  }

  return {
    async login(input: { email: string; password: string }, meta: RequestMeta): Promise<LoginResult> {
      const email = normalizeEmail(input.email)
      const user = await db
        .selectFrom('users')
        .selectAll()
        .where('email_normalized', '=', email)
        .executeTakeFirst()
      // A known account's check is reserved (atomically, as running) before the password is
      // checked: concurrent guesses cannot check more than sequential ones could before the lock,
      // and attempts beyond that wait for the running checks instead of counting as failures.
      // An unknown address follows the same rule (in the cache), so its lock reveals nothing.
      let attempt: Attempt | undefined
      if (user) {
        const reserved = await attempts.reserve(user.id)
        if ('lockedMs' in reserved) throw await refuseLocked(user.id, email, meta, reserved.lockedMs)
        attempt = reserved.attempt
      } else {
        const reserved = await unknown.reserve(email, now)
        if ('lockedMs' in reserved) throw await refuseLocked(undefined, email, meta, reserved.lockedMs)
      }
      // Unknown address, disabled account or no password yet: the same argon2 work, the same answer.
      let ok = false
      try {
        if (user?.status === 'active' && user.password_hash)
          ok = await verifyPassword(user.password_hash, input.password)
        else await burnPasswordCheck(input.password)
      } catch (err) {
        // The check did not run to an answer: the reservation ends, counted neither way.
        if (attempt) await attempts.released(attempt)
        else unknown.released(email)
        throw err
      }
      if (!ok || !user || !attempt) {
        if (attempt) await recordFailure(attempt, meta)
        else await recordUnknownFailure(email, meta, await unknown.failed(email, now))
        throw new PlinthError('PLINTH_AUTH_INVALID_CREDENTIALS')
      }
      // A legacy hash (bcrypt, from an import) that just held is replaced by an argon2id hash of the
      // same password, unless the password changed meanwhile.
      if (user.password_hash && isLegacyHash(user.password_hash))
        await db
          .updateTable('users')
          .set({ password_hash: await hashPassword(input.password) })
          .where('id', '=', user.id)
          .where('password_hash', '=', user.password_hash)
          .execute()
      if (await deps.secondFactor.isEnrolled(user.id)) {
        const { secret, hash } = newSecret(TOKEN_PREFIX.challenge)
        const challengeExpiresAt = new Date(now() + CHALLENGE_TTL_MS)
        await db
          .insertInto('login_challenges')
          .values({
            user_id: user.id,
            token_hash: hash,
            expires_at: challengeExpiresAt,
            ip: meta.ip ?? null,
            user_agent: meta.userAgent?.slice(0, 512) ?? null,
          })
          .execute()
        // The password was right, but the account is not authenticated yet: earlier failures (of
        // passwords and of second factors) stay counted until a second factor succeeds.
        await attempts.released(attempt)
        return { mfaRequired: true, challenge: secret, challengeExpiresAt, userId: user.id }
      }
      await attempts.succeeded(attempt)
      return issueSession(user, meta, 'password')
    },

    /** Second step of a sign-in: a TOTP or recovery code against the challenge from `login`. */
    async completeMfa(
      input: { challenge: string; code?: string; recoveryCode?: string },
      meta: RequestMeta,
    ): Promise<LoginResult> {
      const expired = new PlinthError('PLINTH_AUTH_MFA_CHALLENGE_EXPIRED')
      if (!looksLikeSecret(input.challenge, TOKEN_PREFIX.challenge)) throw expired
      const row = await db
        .selectFrom('login_challenges')
        .selectAll()
        .where('token_hash', '=', hashSecret(input.challenge))
        .where('completed_at', 'is', null)
        .executeTakeFirst()
      if (!row || row.expires_at.getTime() <= now()) throw expired
      // Reserve an attempt before checking the code: parallel guesses on one challenge cannot
      // exceed MAX_CHALLENGE_FAILURES between them.
      const attempt = await db
        .updateTable('login_challenges')
        .set((eb) => ({ failures: eb('failures', '+', 1) }))
        .where('id', '=', row.id)
        .where('failures', '<', MAX_CHALLENGE_FAILURES)
        .where('completed_at', 'is', null)
        .returning('failures')
        .executeTakeFirst()
      if (!attempt) throw expired
      // The account's own count: a locked account checks no code, whatever the challenge.
      const reserved = await attempts.reserve(row.user_id)
      if ('lockedMs' in reserved) {
        await db
          .updateTable('login_challenges')
          .set((eb) => ({ failures: eb('failures', '-', 1) }))
          .where('id', '=', row.id)
          .execute()
        throw await refuseLocked(row.user_id, '', meta, reserved.lockedMs)
      }
      let method: Awaited<ReturnType<SecondFactor['consume']>>
      try {
        method = await deps.secondFactor.consume(row.user_id, input)
      } catch (err) {
        await attempts.released(reserved.attempt)
        throw err
      }
      if (!method) {
        const failures = attempt.failures
        // A wrong second factor counts towards the account's lockout like a wrong password, and
        // keeps counting across challenges until a second factor succeeds (up to the hard lock).
        await attempts.failed(
          reserved.attempt,
          meta,
          { factor: input.code !== undefined ? 'totp' : 'recovery' },
          async (state) => {
            const event: SecurityEventInput = {
              type: 'mfa:failed',
              outcome: 'failure',
              ...emitFor(meta, { type: 'user', id: row.user_id }),
              details: { failures, accountFailures: state.failures },
            }
            await audit.record(db, withTarget(event, row.user_id))
            events.emit(event)
          },
        )
        throw failures >= MAX_CHALLENGE_FAILURES ? expired : new PlinthError('PLINTH_AUTH_MFA_INVALID')
      }
      // A right code: the attempt was not a failure, and the account is authenticated.
      await db
        .updateTable('login_challenges')
        .set((eb) => ({ failures: eb('failures', '-', 1) }))
        .where('id', '=', row.id)
        .execute()
      await attempts.succeeded(reserved.attempt)
      // Conditional on completed_at: two concurrent completions of one challenge cannot both win.
      const done = await db
        .updateTable('login_challenges')
        .set({ completed_at: new Date(now()) })
        .where('id', '=', row.id)
        .where('completed_at', 'is', null)
        .executeTakeFirst()
      if (Number(done.numUpdatedRows) !== 1) throw expired
      const user = await db
        .selectFrom('users')
        .selectAll()
        .where('id', '=', row.user_id)
        .where('status', '=', 'active')
        .executeTakeFirst()
      if (!user) throw expired
      if (method === 'recovery') {
        const event: SecurityEventInput = {
          type: 'mfa:recovery-code-used',
          outcome: 'success',
          ...emitFor(meta, { type: 'user', id: user.id }),
        }
        await audit.record(db, withTarget(event, user.id))
        events.emit(event)
      }
      return issueSession(user, meta, `password+${method}`)
    },
  }
}

export type LoginService = ReturnType<typeof createLoginService>
