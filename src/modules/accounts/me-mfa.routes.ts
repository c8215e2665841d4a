import { Type } from 'typebox'
import type { ModuleContext, PlinthApp } from '../../core/module.ts'
import { SessionIssued, TotpConfirmBody, TotpDisableBody } from './accounts.schemas.ts'
import { accountsServices, requestMeta, sessionIssued } from './accounts.wiring.ts'
import { requireSession, tags, write } from './me-routes-common.ts'

/** The caller's own second factor: TOTP enrolment, its confirmation (recovery codes), turning it off. */
export function meMfaRoutes(api: PlinthApp, ctx: ModuleContext): void {
  const s = accountsServices(ctx)

  const enrol = { ...write, allowDuringMfaEnrolment: true }

  api.post(
    '/me/mfa/totp',
    {
      config: { ...enrol, errors: ['PLINTH_AUTH_MFA_ALREADY_ENABLED', 'PLINTH_USER_NOT_FOUND'] },
      schema: {
        tags,
        summary: 'Start TOTP enrolment: secret, otpauth URI and QR code (SVG)',
        response: {
          200: Type.Object({ secret: Type.String(), otpauthUri: Type.String(), qrSvg: Type.String() }),
        },
      },
    },
    async (request) => {
      const p = request.principal!
      requireSession(p)
      const user = await s.admin.get(p.userId)
      return s.mfa.startEnrolment(p.userId, user.email)
    },
  )

  api.post(
    '/me/mfa/totp/confirm',
    {
      config: {
        ...enrol,
        errors: ['PLINTH_AUTH_MFA_NOT_ENABLED', 'PLINTH_AUTH_MFA_INVALID', 'PLINTH_AUTH_LOCKED'],
      },
      schema: {
        tags,
        summary: 'Confirm enrolment with a first code; returns ten recovery codes (shown once)',
        description:
          'Replaces the session: `token`, the `plinth_session` cookie and `csrfToken` in the answer are new, and the token this request was made with is revoked at once (`sessionReplaced: true`). Keep the new token.',
        body: TotpConfirmBody,
        response: {
          200: Type.Intersect([
            SessionIssued,
            Type.Object({
              recoveryCodes: Type.Array(Type.String()),
              sessionReplaced: Type.Literal(true, {
                description:
                  'The session was replaced: use the new `token` and `csrfToken`; the old token is revoked.',
              }),
            }),
          ]),
        },
      },
    },
    async (request, reply) => {
      const p = request.principal!
      requireSession(p)
      const r = await s.mfa.confirmEnrolment(p.userId, request.body.code, {
        ...requestMeta(request),
        sessionId: p.sessionId,
      })
      // Tokens held back by the role's MFA requirement work again at once, not after the cache TTL.
      await s.tokens.forget(p.userId)
      return {
        ...sessionIssued(api, reply, ctx, r.session),
        recoveryCodes: r.recoveryCodes,
        sessionReplaced: true as const,
      }
    },
  )

  api.delete(
    '/me/mfa/totp',
    {
      config: {
        ...write,
        errors: [
          'PLINTH_AUTH_MFA_NOT_ENABLED',
          'PLINTH_AUTH_MFA_INVALID',
          'PLINTH_AUTH_INVALID_CREDENTIALS',
          'PLINTH_AUTH_LOCKED',
        ],
      },
      schema: {
        tags,
        summary: 'Turn TOTP off (password and a current code required)',
        body: TotpDisableBody,
        response: { 204: Type.Null() },
      },
    },
    async (request, reply) => {
      const p = request.principal!
      requireSession(p)
      await s.mfa.disable(p.userId, request.body, requestMeta(request))
      await s.tokens.forget(p.userId)
      reply.code(204)
      return null
    },
  )
}
