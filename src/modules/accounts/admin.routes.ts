import type { FastifyRequest } from 'fastify'
import { Type } from 'typebox'
import { actorOf } from '../../core/audit.ts'
import type { ModuleContext, PlinthApp } from '../../core/module.ts'
import {
  Email,
  Id,
  MfaPolicyBody,
  RoleSchema,
  UserCreateBody,
  UserListQuery,
  UserPatchBody,
  UserSchema,
} from './accounts.schemas.ts'
import { accountsServices, requestMeta } from './accounts.wiring.ts'
import type { UserView } from './admin.service.ts'
import { assertPasswordPolicy } from './passwords.ts'

const tags = ['admin']
const read = { permission: 'users:read' as const }
const manage = { permission: 'users:manage' as const }
const notFound = ['PLINTH_USER_NOT_FOUND'] as const
const view = (u: UserView) => ({
  ...u,
  createdAt: u.createdAt.toISOString(),
  lastLoginAt: u.lastLoginAt?.toISOString() ?? null,
})
const Invite = Type.Object({ inviteId: Type.String(), expiresAt: Type.String({ format: 'date-time' }) })

/** Administration of other accounts: list, create or invite, change role or status, unlock, revoke sessions, MFA policy. */
export function adminRoutes(api: PlinthApp, ctx: ModuleContext): void {
  const s = accountsServices(ctx)
  /** Reads of other people's accounts are audited (`user:read`, `user:listed`); the change routes audit themselves. */
  const auditRead = (
    request: FastifyRequest,
    action: string,
    details: Record<string, unknown>,
    userId?: string,
  ) =>
    ctx.audit.record(ctx.db.kysely, {
      action,
      actor: actorOf(request.principal!),
      ...(userId ? { target: { type: 'user', id: userId } } : {}),
      outcome: 'success',
      ...requestMeta(request),
      details,
    })

  api.get(
    '/admin/users',
    {
      config: read,
      schema: {
        tags,
        summary: 'List users',
        querystring: UserListQuery,
        response: { 200: Type.Object({ users: Type.Array(UserSchema) }) },
      },
    },
    async (request) => {
      const users = (await s.admin.list(request.query)).map(view)
      const filter = Object.fromEntries(Object.entries(request.query).filter(([, v]) => v !== undefined))
      await auditRead(request, 'user:listed', { filter, count: users.length })
      return { users }
    },
  )

  api.post(
    '/admin/users',
    {
      config: { ...manage, errors: ['PLINTH_USER_EXISTS', 'PLINTH_AUTH_WEAK_PASSWORD'] },
      schema: {
        tags,
        summary: 'Create a user with a password, or (without one) invite them by e-mail',
        body: UserCreateBody,
        response: { 201: UserSchema, 202: Invite },
      },
    },
    async (request, reply) => {
      const actor = actorOf(request.principal!)
      const meta = requestMeta(request)
      const { email, role, password } = request.body
      if (password === undefined) {
        const invite = await s.accounts.invite({ email, role, invitedBy: actor }, meta)
        reply.code(202)
        return { inviteId: invite.id, expiresAt: invite.expiresAt.toISOString() }
      }
      assertPasswordPolicy(password, { email })
      const userId = await s.accounts.createUser({ email, password, role }, actor, meta)
      reply.code(201)
      return view(await s.admin.get(userId))
    },
  )

  api.post(
    '/admin/invites',
    {
      config: { ...manage, errors: ['PLINTH_USER_EXISTS'] },
      schema: {
        tags,
        summary: 'Invite someone by e-mail',
        body: Type.Object({ email: Email, role: RoleSchema }, { additionalProperties: false }),
        response: { 201: Invite },
      },
    },
    async (request, reply) => {
      const invite = await s.accounts.invite(
        { ...request.body, invitedBy: actorOf(request.principal!) },
        requestMeta(request),
      )
      reply.code(201)
      return { inviteId: invite.id, expiresAt: invite.expiresAt.toISOString() }
    },
  )

  api.get(
    '/admin/users/:id',
    {
      config: { ...read, errors: notFound },
      schema: { tags, summary: 'One user', params: Id, response: { 200: UserSchema } },
    },
    async (request) => {
      const user = view(await s.admin.get(request.params.id))
      if (user.id !== request.principal!.userId) await auditRead(request, 'user:read', {}, user.id)
      return user
    },
  )

  api.patch(
    '/admin/users/:id',
    {
      config: { ...manage, errors: [...notFound, 'PLINTH_USER_LAST_ADMIN'] },
      schema: {
        tags,
        summary: 'Change role or status (ends the user’s sessions)',
        params: Id,
        body: UserPatchBody,
        response: { 200: UserSchema },
      },
    },
    async (request) =>
      view(
        await s.admin.update(
          actorOf(request.principal!),
          request.params.id,
          request.body,
          requestMeta(request),
        ),
      ),
  )

  api.post(
    '/admin/users/:id/unlock',
    {
      config: { ...manage, errors: notFound },
      schema: { tags, summary: 'Clear a sign-in lockout', params: Id, response: { 204: Type.Null() } },
    },
    async (request, reply) => {
      await s.admin.unlock(actorOf(request.principal!), request.params.id, requestMeta(request))
      reply.code(204)
      return null
    },
  )

  api.delete(
    '/admin/users/:id/sessions',
    {
      config: { ...manage, errors: notFound },
      schema: {
        tags,
        summary: 'Revoke every session of a user',
        params: Id,
        response: { 200: Type.Object({ revoked: Type.Integer() }) },
      },
    },
    async (request) => ({
      revoked: await s.admin.revokeSessions(
        actorOf(request.principal!),
        request.params.id,
        requestMeta(request),
      ),
    }),
  )

  const Policy = Type.Object({
    admin: Type.Boolean(),
    operator: Type.Boolean(),
    member: Type.Boolean(),
    viewer: Type.Boolean(),
  })
  api.get(
    '/admin/mfa-policy',
    {
      config: read,
      schema: { tags, summary: 'Which roles must use a second factor', response: { 200: Policy } },
    },
    async () => s.admin.mfaPolicy(),
  )
  api.put(
    '/admin/mfa-policy',
    {
      config: manage,
      schema: {
        tags,
        summary: 'Require (or not) a second factor for a role',
        body: MfaPolicyBody,
        response: { 200: Policy },
      },
    },
    async (request) => {
      await s.admin.setMfaPolicy(
        actorOf(request.principal!),
        request.body.role,
        request.body.mfaRequired,
        requestMeta(request),
      )
      return s.admin.mfaPolicy()
    },
  )
}
