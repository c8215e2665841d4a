/**
 * The identity contract: what other modules may know of people's accounts. The accounts module
 * provides it (`PlinthModule.provides.users`) and every module reaches it as `ctx.users`, so that no
 * module imports the accounts module's files (the privacy module resolves, re-authenticates and
 * erases people through it).
 */
import type { Kysely } from 'kysely'
import type { PlinthTables } from '../infra/db/tables.ts'
import type { Principal, Role } from './permissions.ts'

/** The cookie that carries a browser's session token. */
export const SESSION_COOKIE = 'plinth_session'

/** How e-mail addresses are compared everywhere: trimmed, lower case. */
export function normalizeEmail(email: string): string {
  return email.trim().toLowerCase()
}

/** An account as other modules see it. */
export interface UserSummary {
  readonly id: string
  readonly email: string
  readonly role: Role
  readonly status: 'active' | 'disabled'
}

export interface UserFilter {
  readonly role?: Role
  readonly status?: 'active' | 'disabled'
  /** Matches addresses containing it. */
  readonly email?: string
  readonly limit: number
  readonly offset: number
}

/** People's accounts, read-only, plus re-authentication for sensitive actions. */
export interface UserDirectory {
  /** Throws `PLINTH_USER_NOT_FOUND` for an unknown id. */
  get(userId: string): Promise<UserSummary>
  list(filter: UserFilter): Promise<readonly UserSummary[]>
  /**
   * Checks the password (and a current second-factor code or an unused recovery code when the
   * account has one): `null` when it holds, otherwise what failed. Counts towards the account's
   * lockout (`PLINTH_AUTH_LOCKED` while locked); `meta` says where the attempt came from.
   */
  reauthenticate(
    userId: string,
    input: { password: string; code?: string | undefined; recoveryCode?: string | undefined },
    meta?: { readonly ip?: string; readonly userAgent?: string; readonly requestId?: string },
  ): Promise<null | 'password' | 'second-factor'>
  /**
   * Creates an account brought from another system (`plinth import pocketbase|supabase`), with `db`
   * (the import's transaction): its e-mail, creation time and, when it had one, its old password
   * hash (bcrypt, `$2a$`/`$2b$`/`$2y$`), kept as a legacy hash that is checked at the next sign-in
   * and then replaced by an argon2id hash. An address that already has an account is left alone
   * (`exists`, with that account's id). Throws PLINTH_IMPORT_UNSUPPORTED_HASH for another hash format.
   */
  importUser(
    db: Kysely<PlinthTables>,
    input: ImportedUser,
  ): Promise<{ id: string; outcome: 'created' | 'exists' }>
  /**
   * True while the session or API token behind an authenticated principal still holds: not
   * revoked, not expired, its user active and still of the same role. Read from the database (not
   * a cache), so a revocation on any replica is seen at once: for long-lived answers (an event
   * stream) that check again now and then.
   */
  principalActive(principal: Principal): Promise<boolean>
}

/** An account as another system held it. */
export interface ImportedUser {
  readonly email: string
  /** A bcrypt hash, or null (the person signs in after a password reset). */
  readonly legacyPasswordHash: string | null
  readonly createdAt?: Date | undefined
  readonly role?: Role | undefined
}
