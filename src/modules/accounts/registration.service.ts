import type { Kysely } from 'kysely'
import type { Logger } from 'pino'
import { type Audit, auditEntryOf, type SecurityEventInput } from '../../core/audit.ts'
import type { Mailer } from '../../core/mail.ts'
import type { Role } from '../../core/permissions.ts'
import type { Actor, SecurityEvents } from '../../core/security-events.ts'
import type { PlinthTables } from '../../infra/db/tables.ts'
import { PlinthError, translateDbError } from '../../shared/errors.ts'
import { createAfterAnswer } from './after-answer.ts'
import type { CredentialAttempts } from './credential-attempts.ts'
import type { RequestMeta, SecondFactor } from './login.service.ts'
import { assertPasswordPolicy, hashPassword, verifyPassword } from './passwords.ts'
import { hashSecret, looksLikeSecret, newSecret, normalizeEmail, TOKEN_PREFIX } from './secrets.ts'
import type { SessionService } from './sessions.service.ts'

/** A user id stands for that user acting; an actor is taken as is (an API token, the system). */
export const actorFrom = (by: string | Actor): Actor =>
  typeof by === 'string' ? { type: 'user', id: by } : by

export const RESET_TTL_MS = 30 * 60_000
export const INVITE_TTL_MS = 7 * 24 * 3_600_000

export type SignupMode = 'open' | 'invite' | 'closed'

/**
 * Self-service account changes: sign-up (open, by invitation, or closed), password change and
 * reset by a single-use, expiring e-mailed link, and the invitations admins send.
 */
export function createAccountService(deps: {
  db: Kysely<PlinthTables>
  sessions: SessionService
  /** The shared lockout: checking the current password counts like a sign-in. */
  attempts: CredentialAttempts
  secondFactor: Pick<SecondFactor, 'isEnrolled'>
  events: SecurityEvents
  audit: Audit
  mailer: Mailer
  logger: Logger
  signupMode: SignupMode
  /** Base of links in e-mails (PLINTH_PUBLIC_URL, or the local address in development). */
  linkBase: string
  now?: () => number
}) {
  const { db, sessions, events, audit } = deps
  const now = deps.now ?? Date.now
  const log = deps.logger.child({ component: 'accounts' })
  const later = createAfterAnswer(log)
  const ctx = (meta: RequestMeta) => ({ ip: meta.ip, userAgent: meta.userAgent, requestId: meta.requestId })

  /** Inserts a user; a duplicate e-mail becomes PLINTH_USER_EXISTS. */
  async function insertUser(
    email: string,
    password: string | null,
    role: Role,
    trx: Kysely<PlinthTables> = db,
  ): Promise<string> {
    try {
      const row = await trx
        .insertInto('users')
        .values({
          email: email.trim(),
          email_normalized: normalizeEmail(email),
          password_hash: password === null ? null : await hashPassword(password),
          role,
          password_changed_at: password === null ? null : new Date(now()),
        })
        .returning('id')
        .executeTakeFirstOrThrow()
      return row.id
    } catch (err) {
      if (translateDbError(err)?.code === 'PLINTH_DB_CONFLICT')
        throw new PlinthError('PLINTH_USER_EXISTS', undefined, { cause: err })
      throw err
    }
  }

  /** Sends in the background: the answer must not wait on (or reveal) mail delivery. */
  function sendLater(to: string, subject: string, text: string, category: string, secret: string): void {
    deps.mailer
      .send({ to, subject, text, category, secrets: [secret] })
      .catch((err: unknown) => log.error({ err, category }, 'mail not sent'))
  }

  /** The per-address part of a reset request: a link for an active account, nothing otherwise. */
  async function resetFor(email: string, meta: RequestMeta): Promise<void> {
    const user = await db
      .selectFrom('users')
      .select(['id', 'email'])
      .where('email_normalized', '=', email)
      .where('status', '=', 'active')
      .executeTakeFirst()
    if (!user) return
    const { secret, hash } = newSecret(TOKEN_PREFIX.reset)
    const event: SecurityEventInput = {
      type: 'password:reset-requested',
      outcome: 'success',
      actor: { type: 'anonymous' },
      target: { type: 'user', id: user.id },
      ...ctx(meta),
    }
    await db.transaction().execute(async (trx) => {
      await trx
        .insertInto('password_reset_tokens')
        .values({ user_id: user.id, token_hash: hash, expires_at: new Date(now() + RESET_TTL_MS) })
        .execute()
      await audit.record(trx, auditEntryOf(event))
    })
    events.emit(event)
    const link = `${deps.linkBase}/reset-password?token=${encodeURIComponent(secret)}`
    sendLater(
      user.email,
      'Reset your Plinth password',
      `Someone asked to reset the password of this account.\n\nTo choose a new password, open this link within 30 minutes:\n${link}\n\nIf it was not you, ignore this message: your password stays as it is.\n`,
      'password-reset',
      secret,
    )
  }

  return {
    insertUser,

    /** An administrator creates a user with a password (`user:created`, recorded with the insert). */
    async createUser(input: { email: string; password: string; role: Role }, by: Actor, meta: RequestMeta) {
      const { id, event } = await db.transaction().execute(async (trx) => {
        const id = await insertUser(input.email, input.password, input.role, trx)
        const event: SecurityEventInput = {
          type: 'user:created',
          outcome: 'success',
          actor: by,
          target: { type: 'user', id },
          ...ctx(meta),
          details: { role: input.role },
        }
        await audit.record(trx, auditEntryOf(event))
        return { id, event }
      })
      events.emit(event)
      return id
    },

    async signup(input: { email: string; password: string; inviteToken?: string }, meta: RequestMeta) {
      if (deps.signupMode === 'closed') throw new PlinthError('PLINTH_AUTH_SIGNUP_CLOSED')
      if (deps.signupMode === 'invite' && !input.inviteToken) {
        throw new PlinthError(
          'PLINTH_AUTH_SIGNUP_CLOSED',
          'Sign-up needs an invitation: follow the link in your invitation e-mail.',
        )
      }
      assertPasswordPolicy(input.password, { email: input.email })
      const email = normalizeEmail(input.email)
      let event: SecurityEventInput | undefined
      const userId = await db.transaction().execute(async (trx) => {
        let role: Role = 'member'
        if (input.inviteToken) {
          if (!looksLikeSecret(input.inviteToken, TOKEN_PREFIX.invite))
            throw new PlinthError('PLINTH_AUTH_TOKEN_INVALID')
          const invite = await trx
            .updateTable('invites')
            .set({ used_at: new Date(now()) })
            .where('token_hash', '=', hashSecret(input.inviteToken))
            .where('used_at', 'is', null)
            .where('expires_at', '>', new Date(now()))
            .where('email_normalized', '=', email)
            .returning('role')
            .executeTakeFirst()
          if (!invite) throw new PlinthError('PLINTH_AUTH_TOKEN_INVALID')
          role = invite.role
        }
        const id = await insertUser(input.email, input.password, role, trx)
        event = {
          type: 'user:signed-up',
          outcome: 'success',
          actor: { type: 'user', id },
          target: { type: 'user', id },
          ...ctx(meta),
        }
        await audit.record(trx, {
          ...auditEntryOf(event),
          details: { role, invited: input.inviteToken !== undefined },
        })
        return id
      })
      events.emit(event!)
      const session = await sessions.create(userId, meta)
      return { userId, ...session }
    },

    /**
     * Always succeeds from the caller's view, whether or not the address has an account. Nothing
     * that depends on the address runs before the answer: the look-up, the token, the audit row and
     * the mail happen afterwards, so the answer costs the same for every address (issue #9, defect 9).
     */
    requestPasswordReset(emailInput: string, meta: RequestMeta): void {
      const email = normalizeEmail(emailInput)
      later.run('password-reset', () => resetFor(email, meta))
    },

    /** Waits for work started after answers (password-reset requests) to finish. */
    drain(): Promise<void> {
      return later.drain()
    },
    async confirmPasswordReset(input: { token: string; password: string }, meta: RequestMeta): Promise<void> {
      if (!looksLikeSecret(input.token, TOKEN_PREFIX.reset))
        throw new PlinthError('PLINTH_AUTH_TOKEN_INVALID')
      const candidate = await db
        .selectFrom('password_reset_tokens')
        .innerJoin('users', 'users.id', 'password_reset_tokens.user_id')
        .select(['password_reset_tokens.id', 'users.id as userId', 'users.email'])
        .where('password_reset_tokens.token_hash', '=', hashSecret(input.token))
        .where('password_reset_tokens.used_at', 'is', null)
        .where('password_reset_tokens.expires_at', '>', new Date(now()))
        .executeTakeFirst()
      if (!candidate) throw new PlinthError('PLINTH_AUTH_TOKEN_INVALID')
      assertPasswordPolicy(input.password, { email: candidate.email })
      const hash = await hashPassword(input.password)
      const event: SecurityEventInput = {
        type: 'password:reset',
        outcome: 'success',
        actor: { type: 'user', id: candidate.userId },
        target: { type: 'user', id: candidate.userId },
        ...ctx(meta),
      }
      await db.transaction().execute(async (trx) => {
        const used = await trx
          .updateTable('password_reset_tokens')
          .set({ used_at: new Date(now()) })
          .where('id', '=', candidate.id)
          .where('used_at', 'is', null)
          .executeTakeFirst()
        if (Number(used.numUpdatedRows) !== 1) throw new PlinthError('PLINTH_AUTH_TOKEN_INVALID')
        await trx
          .updateTable('users')
          .set({
            password_hash: hash,
            password_changed_at: new Date(now()),
            failed_logins: 0,
            locked_until: null,
            updated_at: new Date(now()),
          })
          .where('id', '=', candidate.userId)
          .execute()
        // Every other outstanding reset link dies with this one.
        await trx
          .updateTable('password_reset_tokens')
          .set({ used_at: new Date(now()) })
          .where('user_id', '=', candidate.userId)
          .where('used_at', 'is', null)
          .execute()
        await sessions.revokeAll(candidate.userId, { trx })
        await audit.record(trx, auditEntryOf(event))
      })
      await sessions.forgetRevoked(candidate.userId)
      events.emit(event)
    },

    /** Changes the password after checking the current one; other sessions end, the current one is rotated. */
    async changePassword(
      input: { userId: string; sessionId: string | undefined; currentPassword: string; newPassword: string },
      meta: RequestMeta,
    ) {
      // Counted before the check and refused while locked, like a sign-in: a stolen session must
      // not buy unlimited guesses at the password.
      const attempt = await deps.attempts.reserveOrThrow(input.userId)
      const { user, ok } = await deps.attempts.checking(attempt, async () => {
        const user = await db
          .selectFrom('users')
          .select(['email', 'password_hash'])
          .where('id', '=', input.userId)
          .executeTakeFirstOrThrow()
        const ok = user.password_hash
          ? await verifyPassword(user.password_hash, input.currentPassword)
          : false
        return { user, ok }
      })
      if (!ok) {
        const refused: SecurityEventInput = {
          type: 'password:changed',
          outcome: 'failure',
          actor: { type: 'user', id: input.userId },
          target: { type: 'user', id: input.userId },
          ...ctx(meta),
          details: { reason: 'wrong-password' },
        }
        await audit.record(db, auditEntryOf(refused))
        events.emit(refused)
        await deps.attempts.failed(attempt, meta)
        throw new PlinthError('PLINTH_AUTH_INVALID_CREDENTIALS', 'The current password is wrong.')
      }
      // A right password authenticates fully only without a second factor (which is not asked here).
      if (await deps.secondFactor.isEnrolled(input.userId)) await deps.attempts.released(attempt)
      else await deps.attempts.succeeded(attempt)
      assertPasswordPolicy(input.newPassword, { email: user.email })
      const hash = await hashPassword(input.newPassword)
      const event: SecurityEventInput = {
        type: 'password:changed',
        outcome: 'success',
        actor: { type: 'user', id: input.userId },
        target: { type: 'user', id: input.userId },
        ...ctx(meta),
      }
      const session = await db.transaction().execute(async (trx) => {
        await trx
          .updateTable('users')
          .set({ password_hash: hash, password_changed_at: new Date(now()), updated_at: new Date(now()) })
          .where('id', '=', input.userId)
          .execute()
        await sessions.revokeAll(input.userId, { trx })
        const created = await sessions.create(input.userId, meta, { trx })
        await audit.record(trx, auditEntryOf(event))
        return created
      })
      await sessions.forgetRevoked(input.userId)
      events.emit(event)
      return session
    },

    async invite(input: { email: string; role: Role; invitedBy: string | Actor }, meta: RequestMeta) {
      // An invitation is its e-mail: without a way to send it, refuse before creating anything.
      if (!deps.mailer.canDeliver)
        throw new PlinthError(
          'PLINTH_MAIL_UNAVAILABLE',
          'Invitations are sent by e-mail and this instance has no SMTP_URL, so the invitation would never arrive: nothing was created. Operators: set SMTP_URL (and PLINTH_MAIL_FROM), or create the account with POST /api/v1/admin/users or `plinth user create`.',
        )
      const actor = actorFrom(input.invitedBy)
      const email = normalizeEmail(input.email)
      const exists = await db
        .selectFrom('users')
        .select('id')
        .where('email_normalized', '=', email)
        .executeTakeFirst()
      if (exists) throw new PlinthError('PLINTH_USER_EXISTS')
      const { secret, hash } = newSecret(TOKEN_PREFIX.invite)
      const expiresAt = new Date(now() + INVITE_TTL_MS)
      const { row, event } = await db.transaction().execute(async (trx) => {
        const row = await trx
          .insertInto('invites')
          .values({
            email_normalized: email,
            role: input.role,
            token_hash: hash,
            created_by: actor.id ?? null,
            expires_at: expiresAt,
          })
          .returning('id')
          .executeTakeFirstOrThrow()
        const event: SecurityEventInput = {
          type: 'invite:created',
          outcome: 'success',
          actor,
          target: { type: 'invite', id: row.id },
          ...ctx(meta),
          details: { role: input.role },
        }
        await audit.record(trx, { ...auditEntryOf(event), details: { role: input.role, email } })
        return { row, event }
      })
      events.emit(event)
      const link = `${deps.linkBase}/signup?invite=${encodeURIComponent(secret)}&email=${encodeURIComponent(email)}`
      sendLater(
        email,
        'You are invited to Plinth',
        `You have been invited to Plinth as ${input.role}.\n\nCreate your account within 7 days:\n${link}\n`,
        'invite',
        secret,
      )
      return { id: row.id, expiresAt }
    },
  }
}

export type AccountService = ReturnType<typeof createAccountService>
