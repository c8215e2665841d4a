import type { SecurityEvents } from '../../core/security-events.ts'
import type { Cache } from '../../infra/cache/cache.ts'
import type { AdminService } from './admin.service.ts'
import type { MfaService } from './mfa.service.ts'
import { SESSION_CACHE_TTL_MS } from './sessions.service.ts'

/** What `GET /me` shows of the caller, cached as JSON. */
export interface Profile {
  readonly id: string
  readonly email: string
  readonly role: 'admin' | 'operator' | 'member' | 'viewer'
  readonly status: 'active' | 'disabled'
  readonly mfaEnabled: boolean
  readonly locked: boolean
  readonly createdAt: string
  readonly lastLoginAt: string | null
  readonly recoveryCodesLeft: number
}

/**
 * The caller's profile for `GET /me`, cached like sessions (SESSION_CACHE_TTL_MS). Every security
 * event about a user (role change, MFA enrolment, password change, lockout…) drops their entry, so
 * a change shows at once on this instance and with Redis everywhere; at most the TTL elsewhere.
 */
export function createProfiles(deps: {
  cache: Cache
  admin: AdminService
  mfa: MfaService
  events: SecurityEvents
}) {
  const key = (userId: string) => `profile:${userId}`
  deps.events.on(async (event) => {
    const ids = new Set<string>()
    if (event.actor.id) ids.add(event.actor.id)
    if (event.target?.type === 'user') ids.add(event.target.id)
    await Promise.all([...ids].map((id) => deps.cache.delete(key(id))))
  })
  return {
    async get(userId: string): Promise<Profile> {
      const cached = await deps.cache.get<Profile>(key(userId))
      if (cached) return cached
      const user = await deps.admin.get(userId)
      const profile: Profile = {
        ...user,
        createdAt: user.createdAt.toISOString(),
        lastLoginAt: user.lastLoginAt?.toISOString() ?? null,
        recoveryCodesLeft: user.mfaEnabled ? await deps.mfa.remainingRecoveryCodes(userId) : 0,
      }
      await deps.cache.set(key(userId), profile, SESSION_CACHE_TTL_MS)
      return profile
    },
  }
}
