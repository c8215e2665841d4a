import type { Kysely } from 'kysely'
import { type Audit, auditEntryOf, type SecurityEventInput } from '../../core/audit.ts'
import type { SecurityEvents } from '../../core/security-events.ts'
import type { Cache } from '../../infra/cache/cache.ts'
import type { Keyring } from '../../infra/crypto/keyring.ts'
import type { PlinthTables } from '../../infra/db/tables.ts'
import { PlinthError } from '../../shared/errors.ts'
import type { CredentialAttempts } from './credential-attempts.ts'
import { totpSecretColumn } from './encrypted-columns.ts'
import type { RequestMeta, SecondFactor } from './login.service.ts'
import { applyMfaRequirement, forgetSessions, owesMfaEnrolment } from './mfa-policy.ts'
import { verifyPassword } from './passwords.ts'
import { generateRecoveryCodes, matchRecoveryCode } from './recovery-codes.ts'
import type { SessionService } from './sessions.service.ts'
import { createTotpSecret, otpauthUri, qrCodeSvg, verifyTotp } from './totp.ts'

/** Binds each encrypted TOTP secret to its user: a ciphertext moved to another row does not decrypt. */
const secretAad = totpSecretColumn.aad

/**
 * TOTP second factor: enrolment (secret, otpauth URI, QR code), confirmation by a first code
 * (which also issues ten single-use recovery codes), disabling with re-authentication, and the
 * sign-in check. Secrets are stored encrypted with the keyring; codes are accepted once.
 */
export function createMfaService(deps: {
  db: Kysely<PlinthTables>
  keyring: Keyring
  sessions: SessionService
  /** The shared lockout: re-authentication (password and code) counts like a sign-in. */
  attempts: CredentialAttempts
  /** Where session look-ups are cached (dropped when turning MFA off restricts sessions). */
  cache: Cache
  events: SecurityEvents
  audit: Audit
  now?: () => number
}) {
  const { db, keyring, events, audit } = deps
  /** A refused attempt: recorded on its own (it changes nothing), then emitted. */
  async function refused(event: SecurityEventInput): Promise<void> {
    await audit.record(db, auditEntryOf(event))
    events.emit(event)
  }
  const now = deps.now ?? Date.now
  const ctx = (userId: string, meta: RequestMeta) => ({
    actor: { type: 'user' as const, id: userId },
    target: { type: 'user', id: userId },
    ip: meta.ip,
    userAgent: meta.userAgent,
    requestId: meta.requestId,
  })

  async function credential(userId: string, confirmed: boolean) {
    return db
      .selectFrom('totp_credentials')
      .selectAll()
      .where('user_id', '=', userId)
      .where('confirmed_at', confirmed ? 'is not' : 'is', null)
      .executeTakeFirst()
  }

  /** Checks a TOTP code and records its step with a conditional update, so it works once even under races. */
  async function consumeTotp(userId: string, code: string, confirmed = true): Promise<boolean> {
    const row = await credential(userId, confirmed)
    if (!row) return false
    const secret = await keyring.decryptStringAsync(row.secret_ciphertext, secretAad(userId))
    const last = row.last_used_step === null ? null : Number(row.last_used_step)
    const result = verifyTotp({ secret, code, lastUsedStep: last, now: now() })
    if (!result.ok) return false
    const updated = await db
      .updateTable('totp_credentials')
      .set({ last_used_step: result.step })
      .where('user_id', '=', userId)
      .where((eb) =>
        eb.or([eb('last_used_step', 'is', null), eb('last_used_step', '<', String(result.step))]),
      )
      .executeTakeFirst()
    return Number(updated.numUpdatedRows) === 1
  }

  async function consumeRecovery(userId: string, code: string): Promise<boolean> {
    const rows = await db
      .selectFrom('recovery_codes')
      .select(['id', 'code_hash'])
      .where('user_id', '=', userId)
      .where('used_at', 'is', null)
      .execute()
    const index = matchRecoveryCode(
      code,
      rows.map((r) => r.code_hash),
    )
    if (index < 0) return false
    const used = await db
      .updateTable('recovery_codes')
      .set({ used_at: new Date(now()) })
      .where('id', '=', rows[index]!.id)
      .where('used_at', 'is', null)
      .executeTakeFirst()
    return Number(used.numUpdatedRows) === 1
  }

  const secondFactor: SecondFactor = {
    async isEnrolled(userId) {
      return (await credential(userId, true)) !== undefined
    },
    async consume(userId, input) {
      if (input.code !== undefined) return (await consumeTotp(userId, input.code)) ? 'totp' : null
      if (input.recoveryCode !== undefined)
        return (await consumeRecovery(userId, input.recoveryCode)) ? 'recovery' : null
      return null
    },
  }

  return {
    secondFactor,

    async startEnrolment(userId: string, email: string) {
      if (await secondFactor.isEnrolled(userId)) throw new PlinthError('PLINTH_AUTH_MFA_ALREADY_ENABLED')
      const secret = createTotpSecret()
      const ciphertext = keyring.encrypt(secret, secretAad(userId))
      const keyId = keyring.keyIdOf(ciphertext)!
      await db
        .insertInto('totp_credentials')
        .values({ user_id: userId, secret_ciphertext: ciphertext, key_id: keyId })
        .onConflict((oc) =>
          oc.column('user_id').doUpdateSet({
            secret_ciphertext: ciphertext,
            key_id: keyId,
            last_used_step: null,
            created_at: new Date(now()),
          }),
        )
        .execute()
      const uri = otpauthUri({ secret, accountName: email })
      return { secret, otpauthUri: uri, qrSvg: await qrCodeSvg(uri) }
    },

    /** Confirms enrolment with a first code; returns the recovery codes (shown once) and a rotated session. */
    async confirmEnrolment(
      userId: string,
      code: string,
      meta: RequestMeta & { sessionId?: string | undefined },
    ) {
      if (!(await credential(userId, false)))
        throw new PlinthError(
          'PLINTH_AUTH_MFA_NOT_ENABLED',
          'Start enrolment first: POST /api/v1/me/mfa/totp.',
        )
      if (!(await consumeTotp(userId, code, false))) {
        await refused({
          type: 'mfa:failed',
          outcome: 'failure',
          ...ctx(userId, meta),
          details: { during: 'enrolment' },
        })
        throw new PlinthError('PLINTH_AUTH_MFA_INVALID')
      }
      const { codes, hashes } = generateRecoveryCodes()
      const event: SecurityEventInput = {
        type: 'mfa:enrolled',
        outcome: 'success',
        ...ctx(userId, meta),
        details: { method: 'totp' },
      }
      const session = await db.transaction().execute(async (trx) => {
        await trx
          .updateTable('totp_credentials')
          .set({ confirmed_at: new Date(now()) })
          .where('user_id', '=', userId)
          .execute()
        await trx.deleteFrom('recovery_codes').where('user_id', '=', userId).execute()
        await trx
          .insertInto('recovery_codes')
          .values(hashes.map((code_hash) => ({ user_id: userId, code_hash })))
          .execute()
        // A privilege change: the session that enrolled is replaced (and an enrolment restriction lifted).
        if (meta.sessionId) await deps.sessions.revoke(userId, meta.sessionId, trx)
        const created = await deps.sessions.create(userId, meta, { trx })
        await audit.record(trx, auditEntryOf(event))
        return created
      })
      await deps.sessions.forgetRevoked(userId)
      events.emit(event)
      return { recoveryCodes: codes, session }
    },

    /** Turns the second factor off after re-authentication by password and a current code. */
    async disable(
      userId: string,
      input: { password: string; code?: string; recoveryCode?: string },
      meta: RequestMeta,
    ) {
      if (!(await secondFactor.isEnrolled(userId))) throw new PlinthError('PLINTH_AUTH_MFA_NOT_ENABLED')
      const attempt = await deps.attempts.reserveOrThrow(userId)
      const { passwordOk, factorOk } = await deps.attempts.checking(attempt, async () => {
        const user = await db
          .selectFrom('users')
          .select('password_hash')
          .where('id', '=', userId)
          .executeTakeFirstOrThrow()
        const passwordOk =
          user.password_hash !== null && (await verifyPassword(user.password_hash, input.password))
        const factorOk = passwordOk && (await secondFactor.consume(userId, input)) !== null
        return { passwordOk, factorOk }
      })
      if (!passwordOk || !factorOk) {
        await refused({
          type: 'mfa:failed',
          outcome: 'failure',
          ...ctx(userId, meta),
          details: { during: 'disable' },
        })
        await deps.attempts.failed(attempt, meta)
        throw new PlinthError(passwordOk ? 'PLINTH_AUTH_MFA_INVALID' : 'PLINTH_AUTH_INVALID_CREDENTIALS')
      }
      await deps.attempts.succeeded(attempt)
      const event: SecurityEventInput = { type: 'mfa:disabled', outcome: 'success', ...ctx(userId, meta) }
      const stepped = await db.transaction().execute(async (trx) => {
        await trx.deleteFrom('recovery_codes').where('user_id', '=', userId).execute()
        await trx.deleteFrom('totp_credentials').where('user_id', '=', userId).execute()
        await audit.record(trx, auditEntryOf(event))
        // When the role requires a second factor, the user's sessions must enrol one again.
        return (await owesMfaEnrolment(trx, userId))
          ? applyMfaRequirement(trx, { userId }, true)
          : { hashes: [] }
      })
      await forgetSessions(deps.cache, stepped.hashes)
      events.emit(event)
    },

    /**
     * Re-authentication before an irreversible change (erasing the account): the password and, when
     * a second factor is enrolled, a current code or an unused recovery code (which it consumes).
     * Returns what failed, or null; counts towards the lockout (PLINTH_AUTH_LOCKED while locked).
     * The caller audits the refusal.
     */
    async reauthenticate(
      userId: string,
      input: { password: string; code?: string | undefined; recoveryCode?: string | undefined },
      meta: RequestMeta = {},
    ): Promise<null | 'password' | 'second-factor'> {
      // Counted before the check and refused (PLINTH_AUTH_LOCKED) while locked, like a sign-in.
      const attempt = await deps.attempts.reserveOrThrow(userId)
      const failed = await deps.attempts.checking(attempt, check)
      if (failed) await deps.attempts.failed(attempt, meta)
      else await deps.attempts.succeeded(attempt)
      return failed

      async function check(): Promise<null | 'password' | 'second-factor'> {
        const user = await db
          .selectFrom('users')
          .select('password_hash')
          .where('id', '=', userId)
          .executeTakeFirst()
        if (!user?.password_hash || !(await verifyPassword(user.password_hash, input.password)))
          return 'password'
        if (!(await secondFactor.isEnrolled(userId))) return null
        const factor = {
          ...(input.code !== undefined ? { code: input.code } : {}),
          ...(input.recoveryCode !== undefined ? { recoveryCode: input.recoveryCode } : {}),
        }
        return (await secondFactor.consume(userId, factor)) === null ? 'second-factor' : null
      }
    },

    async remainingRecoveryCodes(userId: string): Promise<number> {
      const { count } = await db
        .selectFrom('recovery_codes')
        .select((eb) => eb.fn.countAll<string>().as('count'))
        .where('user_id', '=', userId)
        .where('used_at', 'is', null)
        .executeTakeFirstOrThrow()
      return Number(count)
    },
  }
}

export type MfaService = ReturnType<typeof createMfaService>
