import { type Kysely, sql, type Transaction } from 'kysely'
import type { Role } from '../../core/permissions.ts'
import type { Cache } from '../../infra/cache/cache.ts'
import type { PlinthTables } from '../../infra/db/tables.ts'
import { sessionCacheKey, tokenCacheKey } from './cache-keys.ts'

type Db = Kysely<PlinthTables> | Transaction<PlinthTables>

/**
 * What a role's MFA requirement does to credentials that already exist (issue #9, defect 6; see
 * docs/decisions/0011-one-lockout-and-mfa-policy-on-existing-credentials.md):
 * - sessions of that role's users without a confirmed second factor must step up: they are marked
 *   `mfa_enrolment_pending`, exactly like a session opened after the change, and refused with 403
 *   PLINTH_AUTH_MFA_ENROLMENT_REQUIRED except for /me, the enrolment routes, token listing and
 *   sign-out, until the user enrols (which replaces the session);
 * - their API tokens are refused the same way (and flagged `mfaEnrolmentRequired` in the listing)
 *   until the owner enrols; they are not revoked, so enrolling restores them.
 * Lifting the requirement lifts the step-up of sessions it had marked.
 */

/** Users of `role` (or the one user) who owe a second factor: no confirmed TOTP. */
const owing = (db: Db, where: { role: Role } | { userId: string }) => {
  let q = db
    .selectFrom('users')
    .select('users.id')
    .where((eb) =>
      eb.not(
        eb.exists(
          eb
            .selectFrom('totp_credentials')
            .select('totp_credentials.user_id')
            .whereRef('totp_credentials.user_id', '=', 'users.id')
            .where('totp_credentials.confirmed_at', 'is not', null),
        ),
      ),
    )
  q = 'role' in where ? q.where('users.role', '=', where.role) : q.where('users.id', '=', where.userId)
  return q
}

/**
 * Marks (or, with `required` false, unmarks) the active sessions of the users concerned as needing
 * MFA enrolment. Returns the users touched and the sessions' token hashes, whose cached look-ups
 * the caller drops after the commit (`forgetSessions`).
 */
export async function applyMfaRequirement(
  trx: Db,
  where: { role: Role } | { userId: string },
  required: boolean,
): Promise<{ userIds: string[]; hashes: string[] }> {
  const rows = await trx
    .updateTable('sessions')
    .set({ mfa_enrolment_pending: required })
    .where('revoked_at', 'is', null)
    .where('mfa_enrolment_pending', '=', !required)
    .where('user_id', 'in', owing(trx, where))
    .returning(['user_id', 'token_hash'])
    .execute()
  return { userIds: [...new Set(rows.map((r) => r.user_id))], hashes: rows.map((r) => r.token_hash) }
}

export async function forgetSessions(cache: Cache, hashes: readonly string[]): Promise<void> {
  await Promise.all(hashes.map((h) => cache.delete(sessionCacheKey(h))))
}

/** Whether the user's role requires a second factor that the user has not enrolled. */
export async function owesMfaEnrolment(db: Db, userId: string): Promise<boolean> {
  const row = await db
    .selectFrom('users')
    .innerJoin('role_policies', 'role_policies.role', 'users.role')
    .select('users.id')
    .where('users.id', '=', userId)
    .where('role_policies.mfa_required', '=', true)
    .where('users.id', 'in', owing(db, { userId }))
    .executeTakeFirst()
  return row !== undefined
}

/** The SQL of `owesMfaEnrolment` for a user id column, to select it alongside other columns. */
export const owesMfaEnrolmentSql = (userIdColumn: string) => sql<boolean>`(
  exists (select 1 from users u join role_policies p on p.role = u.role
          where u.id = ${sql.ref(userIdColumn)} and p.mfa_required)
  and not exists (select 1 from totp_credentials t
                  where t.user_id = ${sql.ref(userIdColumn)} and t.confirmed_at is not null))`

/** Drops the cached look-ups of every active API token of the role's users (their flag changes). */
export async function forgetRoleTokens(db: Db, cache: Cache, role: Role): Promise<void> {
  const rows = await db
    .selectFrom('api_tokens')
    .innerJoin('users', 'users.id', 'api_tokens.user_id')
    .select('api_tokens.token_hash')
    .where('users.role', '=', role)
    .where('api_tokens.revoked_at', 'is', null)
    .execute()
  await Promise.all(rows.map((r) => cache.delete(tokenCacheKey(r.token_hash))))
}
