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
  'incidents:manage', // acknowledge and resolve built-in alerting incidents (reading them is ops:read)
  'errors:read', // the grouped unexpected errors (GET /api/v1/admin/errors)
  'errors:manage', // resolve, mute or reopen an error group
  'files:manage', // read, share and delete anyone's files (administrators only; each access is audited)
  'events:read', // the live stream of every emitted event (GET /api/v1/events/stream; administrators only)
] as const
export type Permission = (typeof PERMISSIONS)[number]

/**
 * A permission a module declares (`permissions` in its definition): `<module>:<action>`, e.g.
 * `machines:read`. Routes name it exactly like a built-in one.
 */
export type ModulePermission = `${string}:${string}`

/** What a route may require: a built-in permission, or one a loaded module declared. */
export type AnyPermission = Permission | ModulePermission

/** A module permission's name: `<lower-case word>:<lower-case word>`. */
export const PERMISSION_NAME = /^[a-z][a-z0-9-]{0,62}:[a-z][a-z0-9-]{0,62}$/

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
  'incidents:manage',
  'errors:read',
  'errors:manage',
]

/** What each role may do (modules' `permissions` are added at boot). */
export const ROLE_PERMISSIONS: Readonly<Record<Role, ReadonlySet<AnyPermission>>> = Object.freeze({
  admin: new Set(PERMISSIONS),
  operator: new Set(operator),
  member: new Set(member),
  viewer: new Set(viewer),
})

export function roleHas(role: Role, permission: AnyPermission): boolean {
  return ROLE_PERMISSIONS[role].has(permission)
}

/** Permissions modules declared, by name: the module, and the roles granted it. */
const declared = new Map<string, { readonly module: string; readonly roles: readonly Role[] }>()

/** True for a built-in permission or one a loaded module declared. */
export function isKnownPermission(permission: string): boolean {
  return (PERMISSIONS as readonly string[]).includes(permission) || declared.has(permission)
}

/** Every permission modules declared (in declaration order), with their module and roles. */
export function modulePermissions(): readonly { name: string; module: string; roles: readonly Role[] }[] {
  return [...declared].map(([name, d]) => ({ name, ...d }))
}

/**
 * Adds a module's permissions to the role map (`permissions` in the module's definition). The map
 * is the process's: declaring the same permission again for the same module and roles (a second
 * Plinth in one process) is a no-op; a name that is built in, malformed, declared by another
 * module or with other roles throws, naming it — the boot stops.
 */
export function declarePermissions(
  module: string,
  permissions: Readonly<Record<string, { readonly roles: readonly Role[] }>>,
): void {
  for (const [name, { roles }] of Object.entries(permissions)) {
    const where = `module "${module}" declares the permission "${name}"`
    if (!PERMISSION_NAME.test(name)) throw new Error(`${where}: a permission looks like "things:read"`)
    if ((PERMISSIONS as readonly string[]).includes(name))
      throw new Error(`${where}, which is built in (core/permissions.ts): choose another name`)
    const unknown = roles.filter((r) => !(ROLES as readonly string[]).includes(r))
    if (unknown.length > 0) throw new Error(`${where} for unknown roles: ${unknown.join(', ')}`)
    const before = declared.get(name)
    if (before && before.module !== module)
      throw new Error(`${where}, which module "${before.module}" declares too`)
    if (before && [...before.roles].sort().join() !== [...roles].sort().join())
      throw new Error(
        `${where} for the roles ${roles.join(', ')}, but it was declared for ${before.roles.join(', ')}`,
      )
    if (before) continue
    declared.set(name, { module, roles: [...roles] })
    for (const role of roles) (ROLE_PERMISSIONS[role] as Set<AnyPermission>).add(name as ModulePermission)
  }
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
  readonly scopes?: readonly AnyPermission[]
  /** How the session authenticated: cookie (CSRF applies) or bearer. */
  readonly via: 'cookie' | 'bearer'
}

/** True when the principal's role, narrowed by its token scopes, grants the permission. */
export function principalCan(principal: Principal, permission: AnyPermission): boolean {
  if (!roleHas(principal.role, permission)) return false
  return principal.scopes === undefined || (principal.scopes as readonly string[]).includes(permission)
}
