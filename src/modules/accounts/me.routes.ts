import { Type } from 'typebox'
import type { ModuleContext, PlinthApp } from '../../core/module.ts'
import { ChangePasswordBody, SessionIssued, UserSchema } from './accounts.schemas.ts'
import { accountsServices, requestMeta, sessionIssued } from './accounts.wiring.ts'
import { meMfaRoutes } from './me-mfa.routes.ts'
import { read, requireSession, tags, write } from './me-routes-common.ts'
import { meSessionsRoutes } from './me-sessions.routes.ts'
import { meTokensRoutes } from './me-tokens.routes.ts'

/**
 * The caller's own account: profile and password here; sessions, API tokens and the second factor
 * in their own files (registered from here, in this order).
 */
export function meRoutes(api: PlinthApp, ctx: ModuleContext): void {
  const s = accountsServices(ctx)

  api.get(
    '/me',
    {
      config: { ...read, allowDuringMfaEnrolment: true },
      schema: {
        tags,
        summary: 'Who am I (and the CSRF token of this session)',
        response: {
          200: Type.Object({
            user: UserSchema,
            via: Type.Union([Type.Literal('session'), Type.Literal('token')]),
            csrfToken: Type.Union([Type.String(), Type.Null()]),
            mfaEnrolmentRequired: Type.Boolean(),
            recoveryCodesLeft: Type.Integer(),
          }),
        },
      },
    },
    async (request) => {
      const p = request.principal!
      const { recoveryCodesLeft, ...user } = await s.profiles.get(p.userId)
      return {
        user,
        via: p.kind,
        csrfToken: p.sessionId ? api.csrfTokenFor(p.sessionId) : null,
        mfaEnrolmentRequired: request.mfaEnrolmentPending,
        recoveryCodesLeft,
      }
    },
  )

  api.post(
    '/me/password',
    {
      config: {
        ...write,
        errors: [
          'PLINTH_AUTH_INVALID_CREDENTIALS',
          'PLINTH_AUTH_LOCKED',
          'PLINTH_AUTH_WEAK_PASSWORD',
          'PLINTH_AUTH_FORBIDDEN',
        ],
      },
      schema: {
        tags,
        summary: 'Change the password (ends other sessions, rotates this one)',
        body: ChangePasswordBody,
        response: { 200: SessionIssued },
      },
    },
    async (request, reply) => {
      const p = request.principal!
      requireSession(p)
      const session = await s.accounts.changePassword(
        { userId: p.userId, sessionId: p.sessionId, ...request.body },
        requestMeta(request),
      )
      return sessionIssued(api, reply, ctx, session)
    },
  )

  meSessionsRoutes(api, ctx)
  meTokensRoutes(api, ctx)
  meMfaRoutes(api, ctx)
}
