import type { Kysely } from 'kysely'
import { PlinthError } from '../../core/errors.ts'
import type { Role } from '../../core/permissions.ts'
import type { SecurityEvents } from '../../core/security-events.ts'
import type { PlinthTables } from '../../infra/db/tables.ts'
import type { ApiTokenService } from './api-tokens.service.ts'
import type { RequestMeta } from './login.service.ts'
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
  events: SecurityEvents
  now?: () => number
}) {
  const { db, sessions, tokens, events } = deps
  const now = deps.now ?? Date.now
  const by = (actorId: string, meta: RequestMeta) => ({
    actor: { type: 'user' as const, id: actorId },
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
      actorId: string,
      userId: string,
      change: { role?: Role; status?: 'active' | 'disabled' },
      meta: RequestMeta,
    ): Promise<UserView> {
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
        if (roleChanged || disabling) await sessions.revokeAll(userId, { trx })
        return target
      })
      await sessions.forgetRevoked(userId)
      const disabled = change.status === 'disabled' && before.status === 'active'
      if (disabled) await tokens.revoke(userId)
      if (change.role && change.role !== before.role) {
        // API tokens live on under the new role; their cached lookups carry the old one.
        await tokens.forget(userId)
        events.emit({
          type: 'user:role-changed',
          outcome: 'success',
          ...by(actorId, meta),
          target: { type: 'user', id: userId },
          details: { from: before.role, to: change.role },
        })
      }
      if (change.status && change.status !== before.status) {
        events.emit({
          type: change.status === 'disabled' ? 'user:disabled' : 'user:enabled',
          outcome: 'success',
          ...by(actorId, meta),
          target: { type: 'user', id: userId },
        })
      }
      return this.get(userId)
    },

    async unlock(actorId: string, userId: string, meta: RequestMeta): Promise<void> {
      const r = await db
        .updateTable('users')
        .set({ failed_logins: 0, locked_until: null })
        .where('id', '=', userId)
        .executeTakeFirst()
      if (Number(r.numUpdatedRows) === 0) throw new PlinthError('PLINTH_USER_NOT_FOUND')
      events.emit({
        type: 'user:enabled',
        outcome: 'success',
        ...by(actorId, meta),
        target: { type: 'user', id: userId },
        details: { unlocked: true },
      })
    },

    async revokeSessions(actorId: string, userId: string, meta: RequestMeta): Promise<number> {
      await this.get(userId)
      const count = await sessions.revokeAll(userId)
      events.emit({
        type: 'session:revoked',
        outcome: 'success',
        ...by(actorId, meta),
        target: { type: 'user', id: userId },
        details: { count, by: 'admin' },
      })
      return count
    },

    async mfaPolicy(): Promise<Record<Role, boolean>> {
      const rows = await db.selectFrom('role_policies').select(['role', 'mfa_required']).execute()
      const policy: Record<Role, boolean> = { admin: false, operator: false, member: false, viewer: false }
      for (const r of rows) policy[r.role] = r.mfa_required
      return policy
    },

    async setMfaPolicy(actorId: string, role: Role, required: boolean, meta: RequestMeta): Promise<void> {
      await db
        .insertInto('role_policies')
        .values({ role, mfa_required: required })
        .onConflict((oc) =>
          oc.column('role').doUpdateSet({ mfa_required: required, updated_at: new Date(now()) }),
        )
        .execute()
      events.emit({
        type: 'mfa:policy-changed',
        outcome: 'success',
        ...by(actorId, meta),
        target: { type: 'role', id: role },
        details: { mfaRequired: required },
      })
    },
  }
}

export type AdminService = ReturnType<typeof createAdminService>
