/** The roles a user can hold, from most to least privileged. */
export const ROLES = ['admin', 'operator', 'member', 'viewer'] as const
export type Role = (typeof ROLES)[number]

/**
 * Every permission a route can require (`config: { permission: '…' }`). Modules add theirs here so
 * that the role map below stays the one place that says who may do what.
 */
export const PERMISSIONS = [
  'self:read', // own profile, sessions, tokens
  'self:write', // change own password, MFA, sessions, tokens
  'users:read',
  'users:manage', // create, invite, change roles, disable, revoke sessions, MFA policy
  'privacy:manage', // export or erase someone else's personal data (administrators only)
  'ops:read', // health details, metrics
  'jobs:read',
  'jobs:manage',
  'webhooks:manage',
  'events:emit',
  'audit:read',
  'backups:manage', // create, list, show backups (administrators only; restore is CLI-only)
  'files:read',
  'files:write',
  'files:manage', // read, share and delete anyone's files (administrators only; each access is audited)
] as const
export type Permission = (typeof PERMISSIONS)[number]

const member: readonly Permission[] = ['self:read', 'self:write', 'files:read', 'files:write', 'events:emit']
const viewer: readonly Permission[] = ['self:read', 'self:write', 'files:read']
const operator: readonly Permission[] = [
  ...member,
  'users:read',
  'ops:read',
  'jobs:read',
  'jobs:manage',
  'webhooks:manage',
  'audit:read',
]

/** What each role may do. */
export const ROLE_PERMISSIONS: Readonly<Record<Role, ReadonlySet<Permission>>> = Object.freeze({
  admin: new Set(PERMISSIONS),
  operator: new Set(operator),
  member: new Set(member),
  viewer: new Set(viewer),
})

export function roleHas(role: Role, permission: Permission): boolean {
  return ROLE_PERMISSIONS[role].has(permission)
}

/**
 * Who is calling, once authenticated: a user through a session (cookie or bearer) or through an
 * API token (whose scopes narrow the role's permissions).
 */
export interface Principal {
  readonly kind: 'session' | 'token'
  readonly userId: string
  readonly role: Role
  readonly sessionId?: string
  readonly tokenId?: string
  /** For API tokens: the permissions it was granted (a subset of the role's). */
  readonly scopes?: readonly Permission[]
  /** How the session authenticated: cookie (CSRF applies) or bearer. */
  readonly via: 'cookie' | 'bearer'
}

/** True when the principal's role, narrowed by its token scopes, grants the permission. */
export function principalCan(principal: Principal, permission: Permission): boolean {
  if (!roleHas(principal.role, permission)) return false
  return principal.scopes === undefined || principal.scopes.includes(permission)
}
