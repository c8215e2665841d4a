import type { FastifyReply, FastifyRequest } from 'fastify'
import { Type } from 'typebox'
import type { ModuleContext, PlinthApp } from '../../core/module.ts'
import {
  LoginBody,
  LoginResponse,
  MfaBody,
  ResetConfirmBody,
  ResetRequestBody,
  SessionIssued,
  SignupBody,
} from './accounts.schemas.ts'
import {
  accountsServices,
  clearSessionCookie,
  endSessions,
  requestMeta,
  sessionIssued,
} from './accounts.wiring.ts'
import type { LoginResult } from './login.service.ts'
import { normalizeEmail } from './secrets.ts'

const auth = { public: true, rateLimit: 'auth' as const }
/** Routes that name an account by e-mail also count against that account's budget (ADR 0005). */
const byEmail = {
  ...auth,
  rateLimitAccount: (request: FastifyRequest) => {
    const email = (request.body as { email?: unknown } | undefined)?.email
    return typeof email === 'string' ? `email:${normalizeEmail(email)}` : undefined
  },
}
const tags = ['auth']

/** Sign-up, sign-in (with the second factor), sign-out and password reset. */
export function authRoutes(api: PlinthApp, ctx: ModuleContext): void {
  const s = accountsServices(ctx)

  const issued = (reply: FastifyReply, result: Extract<LoginResult, { mfaRequired: false }>) => ({
    mfaRequired: false as const,
    ...sessionIssued(api, reply, ctx, result, result.mfaEnrolmentRequired),
  })

  api.post(
    '/auth/signup',
    {
      config: {
        ...byEmail,
        errors: [
          'PLINTH_AUTH_SIGNUP_CLOSED',
          'PLINTH_AUTH_TOKEN_INVALID',
          'PLINTH_AUTH_WEAK_PASSWORD',
          'PLINTH_USER_EXISTS',
        ],
      },
      schema: {
        tags,
        summary: 'Create an account (PLINTH_SIGNUP_MODE)',
        body: SignupBody,
        response: { 201: SessionIssued },
      },
    },
    async (request, reply) => {
      const r = await s.accounts.signup(request.body, requestMeta(request))
      reply.code(201)
      return sessionIssued(api, reply, ctx, r)
    },
  )

  api.post(
    '/auth/login',
    {
      config: { ...byEmail, errors: ['PLINTH_AUTH_INVALID_CREDENTIALS', 'PLINTH_AUTH_LOCKED'] },
      schema: {
        tags,
        summary: 'Sign in; answers whether a second factor is needed',
        body: LoginBody,
        response: { 200: LoginResponse },
      },
    },
    async (request, reply) => {
      const r = await s.login.login(request.body, requestMeta(request))
      if (r.mfaRequired)
        return {
          mfaRequired: true as const,
          challenge: r.challenge,
          challengeExpiresAt: r.challengeExpiresAt.toISOString(),
        }
      return issued(reply, r)
    },
  )

  api.post(
    '/auth/mfa',
    {
      config: {
        ...auth,
        errors: ['PLINTH_AUTH_MFA_INVALID', 'PLINTH_AUTH_MFA_CHALLENGE_EXPIRED', 'PLINTH_AUTH_LOCKED'],
      },
      schema: {
        tags,
        summary: 'Complete a sign-in with a TOTP or recovery code',
        body: MfaBody,
        response: { 200: LoginResponse },
      },
    },
    async (request, reply) => {
      const r = await s.login.completeMfa(request.body, requestMeta(request))
      if (r.mfaRequired) throw new Error('unreachable: a completed challenge issues a session')
      return issued(reply, r)
    },
  )

  api.post(
    '/auth/logout',
    {
      config: { permission: 'self:read', allowDuringMfaEnrolment: true },
      schema: { tags, summary: 'End the current session', response: { 204: Type.Null() } },
    },
    async (request, reply) => {
      const p = request.principal!
      const sessionId = p.sessionId
      if (sessionId) {
        await endSessions(
          ctx,
          p.userId,
          async (trx) => ((await s.sessions.revoke(p.userId, sessionId, trx)) ? 1 : 0),
          () => ({
            type: 'session:revoked',
            outcome: 'success',
            actor: { type: 'user', id: p.userId },
            target: { type: 'session', id: sessionId },
            ...requestMeta(request),
            details: { by: 'logout' },
          }),
        )
      }
      clearSessionCookie(reply)
      reply.code(204)
      return null
    },
  )

  api.post(
    '/auth/password-reset',
    {
      config: byEmail,
      schema: {
        tags,
        summary: 'E-mail a single-use reset link (answers the same for unknown addresses)',
        body: ResetRequestBody,
        response: { 202: Type.Object({}) },
      },
    },
    async (request, reply) => {
      // Answers at once: the look-up and the mail happen after the answer, whatever the address.
      s.accounts.requestPasswordReset(request.body.email, requestMeta(request))
      reply.code(202)
      return {}
    },
  )

  api.post(
    '/auth/password-reset/confirm',
    {
      config: { ...auth, errors: ['PLINTH_AUTH_TOKEN_INVALID', 'PLINTH_AUTH_WEAK_PASSWORD'] },
      schema: {
        tags,
        summary: 'Set a new password with the e-mailed token',
        body: ResetConfirmBody,
        response: { 204: Type.Null() },
      },
    },
    async (request, reply) => {
      await s.accounts.confirmPasswordReset(request.body, requestMeta(request))
      reply.code(204)
      return null
    },
  )
}
