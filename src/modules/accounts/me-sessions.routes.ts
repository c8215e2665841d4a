import { Type } from 'typebox'
import { actorOf } from '../../core/audit.ts'
import type { ModuleContext, PlinthApp } from '../../core/module.ts'
import { PlinthError } from '../../shared/errors.ts'
import { Id, SessionSchema } from './accounts.schemas.ts'
import { accountsServices, endSessions, requestMeta } from './accounts.wiring.ts'
import { read, tags, write } from './me-routes-common.ts'

/** The caller's own sessions: list them, sign out everywhere else, revoke one. */
export function meSessionsRoutes(api: PlinthApp, ctx: ModuleContext): void {
  const s = accountsServices(ctx)

  api.get(
    '/me/sessions',
    {
      config: read,
      schema: {
        tags,
        summary: 'My active sessions',
        response: { 200: Type.Object({ sessions: Type.Array(SessionSchema) }) },
      },
    },
    async (request) => {
      const p = request.principal!
      const sessions = await s.sessions.list(p.userId)
      return {
        sessions: sessions.map((x) => ({
          ...x,
          createdAt: x.createdAt.toISOString(),
          lastSeenAt: x.lastSeenAt.toISOString(),
          expiresAt: x.expiresAt.toISOString(),
          current: x.id === p.sessionId,
        })),
      }
    },
  )

  api.delete(
    '/me/sessions',
    {
      config: write,
      schema: {
        tags,
        summary: 'Sign out everywhere else',
        response: { 200: Type.Object({ revoked: Type.Integer() }) },
      },
    },
    async (request) => {
      const p = request.principal!
      const revoked = await endSessions(
        ctx,
        p.userId,
        (trx) =>
          s.sessions.revokeAll(p.userId, { ...(p.sessionId ? { exceptSessionId: p.sessionId } : {}), trx }),
        (count) => ({
          type: 'session:revoked',
          outcome: 'success',
          actor: actorOf(p),
          target: { type: 'user', id: p.userId },
          ...requestMeta(request),
          details: { count, by: 'self' },
        }),
      )
      return { revoked }
    },
  )

  api.delete(
    '/me/sessions/:id',
    {
      config: { ...write, errors: ['PLINTH_RESOURCE_NOT_FOUND'] },
      schema: { tags, summary: 'Revoke one of my sessions', params: Id, response: { 204: Type.Null() } },
    },
    async (request, reply) => {
      const p = request.principal!
      const revoked = await endSessions(
        ctx,
        p.userId,
        async (trx) => ((await s.sessions.revoke(p.userId, request.params.id, trx)) ? 1 : 0),
        (count) =>
          count === 0
            ? undefined
            : {
                type: 'session:revoked',
                outcome: 'success',
                actor: actorOf(p),
                target: { type: 'session', id: request.params.id },
                ...requestMeta(request),
                details: { by: 'self' },
              },
      )
      if (revoked === 0) throw new PlinthError('PLINTH_RESOURCE_NOT_FOUND')
      reply.code(204)
      return null
    },
  )
}
