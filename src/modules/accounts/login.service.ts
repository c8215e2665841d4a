import type { Kysely } from 'kysely'
import { type Audit, auditEntryOf, type SecurityEventInput } from '../../core/audit.ts'
import type { Actor, SecurityEvents } from '../../core/security-events.ts'
import type { Cache } from '../../infra/cache/cache.ts'
import type { PlinthTables } from '../../infra/db/tables.ts'
import { PlinthError } from '../../shared/errors.ts'
import type { User } from './accounts.tables.ts'
import { createUnknownAccountCounter, lockAfter, remainingLockMs } from './lockout.ts'
import { burnPasswordCheck, verifyPassword } from './passwords.ts'
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
  now?: () => number
}) {
  const { db, sessions, events, audit } = deps
  const now = deps.now ?? Date.now
  const unknown = createUnknownAccountCounter(deps.cache)

  const emitFor = (meta: RequestMeta, actor: Actor) => ({
    actor,
    ip: meta.ip,
    userAgent: meta.userAgent,
    requestId: meta.requestId,
  })

  function locked(ms: number): PlinthError {
    return new PlinthError('PLINTH_AUTH_LOCKED', undefined, {
      headers: { 'retry-after': String(Math.ceil(ms / 1000)) },
    })
  }

  /** The events of a failed attempt (none for a quiet one that did not lock the account). */
  function failureEvents(
    actor: Actor,
    meta: RequestMeta,
    state: { failures: number; lockedUntil: Date | null },
    quiet: boolean,
  ): SecurityEventInput[] {
    const out: SecurityEventInput[] = []
    if (!quiet)
      out.push({
        type: 'login:failed',
        outcome: 'failure',
        ...emitFor(meta, actor),
        details: { failures: state.failures },
      })
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
   * Counts a failed attempt (and locks the account past the threshold). For a known account the
   * counter, the lock and their audit rows are one transaction; an unknown address is counted in
   * the cache and audited on its own.
   */
  async function recordFailure(
    user: User | undefined,
    email: string,
    meta: RequestMeta,
    options: { quiet?: boolean } = {},
  ): Promise<void> {
    const t = now()
    let emitted: SecurityEventInput[]
    if (user) {
      emitted = await db.transaction().execute(async (trx) => {
        const row = await trx
          .updateTable('users')
          .set((eb) => ({ failed_logins: eb('failed_logins', '+', 1) }))
          .where('id', '=', user.id)
          .returning('failed_logins')
          .executeTakeFirstOrThrow()
        const state = { failures: row.failed_logins, lockedUntil: lockAfter(row.failed_logins, t) }
        if (state.lockedUntil)
          await trx
            .updateTable('users')
            .set({ locked_until: state.lockedUntil })
            .where('id', '=', user.id)
            .execute()
        const list = failureEvents({ type: 'user', id: user.id }, meta, state, options.quiet ?? false)
        for (const event of list) await audit.record(trx, withTarget(event, user.id))
        return list
      })
    } else {
      const state = await unknown.fail(email, t)
      emitted = failureEvents({ type: 'anonymous' }, meta, state, options.quiet ?? false)
      // The address someone tried is kept in the audit row (not in the event, which is logged).
      for (const event of emitted)
        await audit.record(db, { ...auditEntryOf(event), details: { ...event.details, email } })
    }
    for (const event of emitted) events.emit(event)
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
      const lockMs = user
        ? remainingLockMs(user.locked_until, now())
        : remainingLockMs((await unknown.get(email)).lockedUntil, now())
      if (lockMs > 0) {
        const event: SecurityEventInput = {
          type: 'login:failed',
          outcome: 'failure',
          ...emitFor(meta, user ? { type: 'user', id: user.id } : { type: 'anonymous' }),
          details: { reason: 'locked' },
        }
        await audit.record(
          db,
          user
            ? withTarget(event, user.id)
            : { ...auditEntryOf(event), details: { reason: 'locked', email } },
        )
        events.emit(event)
        throw locked(lockMs)
      }
      // Unknown address, disabled account or no password yet: the same argon2 work, the same answer.
      let ok = false
      if (user?.status === 'active' && user.password_hash)
        ok = await verifyPassword(user.password_hash, input.password)
      else await burnPasswordCheck(input.password)
      if (!ok || !user) {
        await recordFailure(user, email, meta)
        throw new PlinthError('PLINTH_AUTH_INVALID_CREDENTIALS')
      }
      if (user.failed_logins > 0 || user.locked_until) {
        await db
          .updateTable('users')
          .set({ failed_logins: 0, locked_until: null })
          .where('id', '=', user.id)
          .execute()
      }
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
        return { mfaRequired: true, challenge: secret, challengeExpiresAt, userId: user.id }
      }
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
      const method = await deps.secondFactor.consume(row.user_id, input)
      if (!method) {
        const failures = attempt.failures
        const event: SecurityEventInput = {
          type: 'mfa:failed',
          outcome: 'failure',
          ...emitFor(meta, { type: 'user', id: row.user_id }),
          details: { failures },
        }
        await audit.record(db, withTarget(event, row.user_id))
        events.emit(event)
        // A wrong second factor counts towards the account's lockout like a wrong password:
        // knowing the password must not buy unlimited challenges of five guesses each.
        const user = await db.selectFrom('users').selectAll().where('id', '=', row.user_id).executeTakeFirst()
        if (user) await recordFailure(user, user.email_normalized, meta, { quiet: true })
        throw failures >= MAX_CHALLENGE_FAILURES ? expired : new PlinthError('PLINTH_AUTH_MFA_INVALID')
      }
      // A right code: the attempt was not a failure.
      await db
        .updateTable('login_challenges')
        .set((eb) => ({ failures: eb('failures', '-', 1) }))
        .where('id', '=', row.id)
        .execute()
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
