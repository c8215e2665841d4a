/**
 * The identity contract: what other modules may know of people's accounts. The accounts module
 * provides it (`PlinthModule.provides.users`) and every module reaches it as `ctx.users`, so that no
 * module imports the accounts module's files (the privacy module resolves, re-authenticates and
 * erases people through it).
 */
import type { Role } from './permissions.ts'

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
}
