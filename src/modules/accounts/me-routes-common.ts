import type { Principal } from '../../core/permissions.ts'
import { PlinthError } from '../../shared/errors.ts'

/** What the caller's own routes (`/me…`) share: their OpenAPI tag and permissions. */
export const tags = ['me']
export const read = { permission: 'self:read' as const }
export const write = { permission: 'self:write' as const }

/** Changes of credentials need a session: an API token cannot mint tokens or change the password. */
export function requireSession(p: Principal): void {
  if (p.kind !== 'session')
    throw new PlinthError('PLINTH_AUTH_FORBIDDEN', 'This needs a signed-in session, not an API token.')
}
