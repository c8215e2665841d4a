import type { Kysely } from 'kysely'
import { type Audit, auditDiff, auditEntryOf, type SecurityEventInput } from '../../core/audit.ts'
import type { Role } from '../../core/permissions.ts'
import type { Actor, SecurityEvents } from '../../core/security-events.ts'
import type { Cache } from '../../infra/cache/cache.ts'
import type { PlinthTables } from '../../infra/db/tables.ts'
import { PlinthError } from '../../shared/errors.ts'
import type { ApiTokenService } from './api-tokens.service.ts'
import type { RequestMeta } from './login.service.ts'
import { applyMfaRequirement, forgetRoleTokens, forgetSessions } from './mfa-policy.ts'
import { actorFrom } from './registration.service.ts'
import { normalizeEmail } from './secrets.ts'
import type { SessionService } from './sessions.service.ts'

export interface UserView {
  readonly id: string
  readonly email: string
  readonly role: Role
  readonly status: 'active' | 'disabled'
  readonly mfaEnabled: boolean
  readonly locked: boolean
  readonly createdAt: Date
  readonly lastLoginAt: Date | null
}

/** What administrators do to other accounts. Every change ends the target's sessions where it changes their rights. */
export function createAdminService(deps: {
  db: Kysely<PlinthTables>
  sessions: SessionService
  tokens: ApiTokenService
  /** Where session and token look-ups are cached (dropped when the MFA policy changes them). */
  cache: Cache
  events: SecurityEvents
  audit: Audit
  now?: () => number
}) {
  const { db, sessions, tokens, events, audit } = deps
  const now = deps.now ?? Date.now
  /** Who acts (a user id, or an actor such as an API token) and from where. */
  const by = (actor: string | Actor, meta: RequestMeta) => ({
    actor: actorFrom(actor),
    ip: meta.ip,
    userAgent: meta.userAgent,
    requestId: meta.requestId,
  })

  const baseQuery = () =>
    db
      .selectFrom('users')
      .leftJoin('totp_credentials', (j) =>
        j
          .onRef('totp_credentials.user_id', '=', 'users.id')
          .on('totp_credentials.confirmed_at', 'is not', null),
      )
      .select([
        'users.id',
        'users.email',
        'users.role',
        'users.status',
        'users.locked_until',
        'users.created_at',
        'users.last_login_at',
        'totp_credentials.user_id as totp',
      ])

  const toView = (
    r: Awaited<ReturnType<ReturnType<typeof baseQuery>['executeTakeFirstOrThrow']>>,
  ): UserView => ({
    id: r.id,
    email: r.email,
    role: r.role,
    status: r.status,
    mfaEnabled: r.totp !== null,
    locked: r.locked_until !== null && r.locked_until.getTime() > now(),
    createdAt: r.created_at,
    lastLoginAt: r.last_login_at,
  })

  return {
    async get(userId: string): Promise<UserView> {
      const row = await baseQuery().where('users.id', '=', userId).executeTakeFirst()
      if (!row) throw new PlinthError('PLINTH_USER_NOT_FOUND')
      return toView(row)
    },

    async list(filter: {
      role?: Role
      status?: 'active' | 'disabled'
      email?: string
      limit: number
      offset: number
    }) {
      let q = baseQuery()
      if (filter.role) q = q.where('users.role', '=', filter.role)
      if (filter.status) q = q.where('users.status', '=', filter.status)
      if (filter.email)
        q = q.where(
          'users.email_normalized',
          'like',
          `%${normalizeEmail(filter.email).replace(/[\\%_]/g, '\\$&')}%`,
        )
      const rows = await q
        .orderBy('users.created_at', 'asc')
        .orderBy('users.id')
        .limit(filter.limit)
        .offset(filter.offset)
        .execute()
      return rows.map(toView)
    },

    async update(
      actor: string | Actor,
      userId: string,
      change: { role?: Role; status?: 'active' | 'disabled' },
      meta: RequestMeta,
    ): Promise<UserView> {
      const emitted: SecurityEventInput[] = []
      const before = await db.transaction().execute(async (trx) => {
        // One statement locks the target and every active administrator, in id order (no deadlock
        // between two admins demoting each other); the second waits, then sees the first's change.
        const rows = await trx
          .selectFrom('users')
          .select(['id', 'role', 'status'])
          .where((eb) =>
            eb.or([eb('id', '=', userId), eb.and([eb('role', '=', 'admin'), eb('status', '=', 'active')])]),
          )
          .orderBy('id')
          .forUpdate()
          .execute()
        const target = rows.find((r) => r.id === userId)
        if (!target) throw new PlinthError('PLINTH_USER_NOT_FOUND')
        const roleChanged = change.role !== undefined && change.role !== target.role
        const disabling = change.status === 'disabled' && target.status === 'active'
        const otherAdmins = rows.filter((r) => r.id !== userId && r.role === 'admin' && r.status === 'active')
        if (target.role === 'admin' && target.status === 'active' && (roleChanged || disabling)) {
          if (otherAdmins.length === 0) throw new PlinthError('PLINTH_USER_LAST_ADMIN')
        }
        await trx
          .updateTable('users')
          .set({
            ...(change.role ? { role: change.role } : {}),
            ...(change.status ? { status: change.status } : {}),
            updated_at: new Date(now()),
          })
          .where('id', '=', userId)
          .execute()
        // A change of rights ends every session: the user signs in again under the new rights.
        const sessionsEnded = roleChanged || disabling ? await sessions.revokeAll(userId, { trx }) : 0
        const subject = { type: 'user', id: userId }
        if (roleChanged) {
          const event: SecurityEventInput = {
            type: 'user:role-changed',
            outcome: 'success',
            ...by(actor, meta),
            target: subject,
            details: { from: target.role, to: change.role },
          }
          await audit.record(trx, {
            ...auditEntryOf(event),
            details: { sessionsEnded },
            changes: auditDiff({ role: target.role }, { role: change.role }),
          })
          emitted.push(event)
        }
        if (change.status && change.status !== target.status) {
          const event: SecurityEventInput = {
            type: change.status === 'disabled' ? 'user:disabled' : 'user:enabled',
            outcome: 'success',
            ...by(actor, meta),
            target: subject,
          }
          await audit.record(trx, {
            ...auditEntryOf(event),
            ...(disabling ? { details: { sessionsEnded, tokensRevoked: true } } : {}),
            changes: auditDiff({ status: target.status }, { status: change.status }),
          })
          emitted.push(event)
        }
        return target
      })
      await sessions.forgetRevoked(userId)
      const disabled = change.status === 'disabled' && before.status === 'active'
      if (disabled) await tokens.revoke(userId)
      // API tokens live on under a new role; their cached lookups carry the old one.
      if (change.role && change.role !== before.role) await tokens.forget(userId)
      for (const event of emitted) events.emit(event)
      return this.get(userId)
    },

    async unlock(actor: string | Actor, userId: string, meta: RequestMeta): Promise<void> {
      const event: SecurityEventInput = {
        type: 'user:enabled',
        outcome: 'success',
        ...by(actor, meta),
        target: { type: 'user', id: userId },
        details: { unlocked: true },
      }
      await db.transaction().execute(async (trx) => {
        const r = await trx
          .updateTable('users')
          .set({ failed_logins: 0, locked_until: null })
          .where('id', '=', userId)
          .executeTakeFirst()
        if (Number(r.numUpdatedRows) === 0) throw new PlinthError('PLINTH_USER_NOT_FOUND')
        await audit.record(trx, auditEntryOf(event))
      })
      events.emit(event)
    },

    async revokeSessions(actor: string | Actor, userId: string, meta: RequestMeta): Promise<number> {
      await this.get(userId)
      const event = await db.transaction().execute(async (trx) => {
        const count = await sessions.revokeAll(userId, { trx })
        const event: SecurityEventInput = {
          type: 'session:revoked',
          outcome: 'success',
          ...by(actor, meta),
          target: { type: 'user', id: userId },
          details: { count, by: 'admin' },
        }
        await audit.record(trx, auditEntryOf(event))
        return event
      })
      await sessions.forgetRevoked(userId)
      events.emit(event)
      return event.details!.count as number
    },

    async mfaPolicy(): Promise<Record<Role, boolean>> {
      const rows = await db.selectFrom('role_policies').select(['role', 'mfa_required']).execute()
      const policy: Record<Role, boolean> = { admin: false, operator: false, member: false, viewer: false }
      for (const r of rows) policy[r.role] = r.mfa_required
      return policy
    },

    async setMfaPolicy(
      actor: string | Actor,
      role: Role,
      required: boolean,
      meta: RequestMeta,
    ): Promise<void> {
      const event: SecurityEventInput = {
        type: 'mfa:policy-changed',
        outcome: 'success',
        ...by(actor, meta),
        target: { type: 'role', id: role },
        details: { mfaRequired: required },
      }
      const stepped = await db.transaction().execute(async (trx) => {
        // The old value comes from the row this upsert replaces, so the diff is exact under concurrency.
        const old = await trx
          .selectFrom('role_policies')
          .select('mfa_required')
          .where('role', '=', role)
          .forUpdate()
          .executeTakeFirst()
        await trx
          .insertInto('role_policies')
          .values({ role, mfa_required: required })
          .onConflict((oc) =>
            oc.column('role').doUpdateSet({ mfa_required: required, updated_at: new Date(now()) }),
          )
          .execute()
        // Existing sessions of the role's users without a second factor must step up (or, when the
        // requirement is lifted, no longer need to): the same restriction as a new session's.
        const stepped = await applyMfaRequirement(trx, { role }, required)
        await audit.record(trx, {
          ...auditEntryOf(event),
          details: { ...event.details, sessionsChanged: stepped.hashes.length },
          changes: auditDiff({ mfaRequired: old?.mfa_required ?? false }, { mfaRequired: required }),
        })
        return stepped
      })
      // After the commit, so that no request caches the old state in between.
      await forgetSessions(deps.cache, stepped.hashes)
      await forgetRoleTokens(db, deps.cache, role)
      events.emit(event)
    },
  }
}

export type AdminService = ReturnType<typeof createAdminService>
