import type { Kysely } from 'kysely'
import type { Principal } from '../../core/permissions.ts'
import type { PlinthTables } from '../../infra/db/tables.ts'

/**
 * `users.principalActive`: the session or API token behind a principal is still unrevoked and
 * unexpired, its user active and of the same role. One indexed read by primary key, never the
 * session cache, so that a revocation on another replica is seen at the next check. (An open
 * event stream is use: the idle timeout is not applied here.)
 */
export function createPrincipalActive(deps: { db: Kysely<PlinthTables>; now: () => number }) {
  return async (principal: Principal): Promise<boolean> => {
    const now = new Date(deps.now())
    if (principal.kind === 'session') {
      if (!principal.sessionId) return false
      const row = await deps.db
        .selectFrom('sessions')
        .innerJoin('users', 'users.id', 'sessions.user_id')
        .select('users.role')
        .where('sessions.id', '=', principal.sessionId)
        .where('sessions.user_id', '=', principal.userId)
        .where('sessions.revoked_at', 'is', null)
        .where('sessions.expires_at', '>', now)
        .where('users.status', '=', 'active')
        .executeTakeFirst()
      return row?.role === principal.role
    }
    if (!principal.tokenId) return false
    const row = await deps.db
      .selectFrom('api_tokens')
      .innerJoin('users', 'users.id', 'api_tokens.user_id')
      .select('users.role')
      .where('api_tokens.id', '=', principal.tokenId)
      .where('api_tokens.user_id', '=', principal.userId)
      .where('api_tokens.revoked_at', 'is', null)
      .where((eb) => eb.or([eb('api_tokens.expires_at', 'is', null), eb('api_tokens.expires_at', '>', now)]))
      .where('users.status', '=', 'active')
      .executeTakeFirst()
    return row?.role === principal.role
  }
}
