import { Type } from 'typebox'
import { actorOf, auditEntryOf, type SecurityEventInput } from '../../core/audit.ts'
import type { ModuleContext, PlinthApp } from '../../core/module.ts'
import type { AnyPermission } from '../../core/permissions.ts'
import { PlinthError } from '../../shared/errors.ts'
import { Id, TokenCreateBody, TokenSchema } from './accounts.schemas.ts'
import { accountsServices, requestMeta } from './accounts.wiring.ts'
import { read, requireSession, tags, write } from './me-routes-common.ts'

const iso = (d: Date | null) => (d ? d.toISOString() : null)

/** The caller's own API tokens: list, create (the secret shown once), revoke. */
export function meTokensRoutes(api: PlinthApp, ctx: ModuleContext): void {
  const s = accountsServices(ctx)

  const tokenView = (t: {
    id: string
    name: string
    hint: string
    scopes: readonly string[]
    createdAt: Date
    expiresAt: Date | null
    lastUsedAt: Date | null
    mfaEnrolmentRequired: boolean
  }) => ({
    ...t,
    scopes: [...t.scopes],
    createdAt: t.createdAt.toISOString(),
    expiresAt: iso(t.expiresAt),
    lastUsedAt: iso(t.lastUsedAt),
  })

  api.get(
    '/me/tokens',
    {
      // Readable while a second factor is owed: the listing shows which tokens it holds back.
      config: { ...read, allowDuringMfaEnrolment: true },
      schema: {
        tags,
        summary: 'My API tokens (never the secret)',
        response: { 200: Type.Object({ tokens: Type.Array(TokenSchema) }) },
      },
    },
    async (request) => ({ tokens: (await s.tokens.list(request.principal!.userId)).map(tokenView) }),
  )

  api.post(
    '/me/tokens',
    {
      config: { ...write, errors: ['PLINTH_USER_NOT_FOUND'] },
      schema: {
        tags,
        summary: 'Create an API token (the secret is shown once)',
        body: TokenCreateBody,
        response: { 201: Type.Intersect([TokenSchema, Type.Object({ token: Type.String() })]) },
      },
    },
    async (request, reply) => {
      const p = request.principal!
      requireSession(p)
      let event: SecurityEventInput | undefined
      const { token, view } = await s.tokens.create(
        {
          userId: p.userId,
          role: p.role,
          name: request.body.name,
          scopes: request.body.scopes as AnyPermission[],
          ...(request.body.expiresAt ? { expiresAt: new Date(request.body.expiresAt) } : {}),
        },
        async (trx, created) => {
          event = {
            type: 'token:created',
            outcome: 'success',
            actor: actorOf(p),
            target: { type: 'api_token', id: created.id },
            ...requestMeta(request),
            details: { name: created.name, scopes: created.scopes },
          }
          await ctx.audit.record(trx, {
            ...auditEntryOf(event),
            details: { ...event.details, expiresAt: created.expiresAt?.toISOString() ?? null },
          })
        },
      )
      if (event) ctx.securityEvents.emit(event)
      reply.code(201)
      return { ...tokenView(view), token }
    },
  )

  api.delete(
    '/me/tokens/:id',
    {
      config: { ...write, errors: ['PLINTH_RESOURCE_NOT_FOUND'] },
      schema: { tags, summary: 'Revoke an API token', params: Id, response: { 204: Type.Null() } },
    },
    async (request, reply) => {
      const p = request.principal!
      const event: SecurityEventInput = {
        type: 'token:revoked',
        outcome: 'success',
        actor: actorOf(p),
        target: { type: 'api_token', id: request.params.id },
        ...requestMeta(request),
      }
      const revoked = await s.tokens.revoke(p.userId, request.params.id, (trx) =>
        ctx.audit.record(trx, auditEntryOf(event)),
      )
      if (revoked === 0) throw new PlinthError('PLINTH_RESOURCE_NOT_FOUND')
      ctx.securityEvents.emit(event)
      reply.code(204)
      return null
    },
  )
}
