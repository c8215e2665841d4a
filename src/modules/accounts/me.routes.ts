import { Type } from 'typebox'
import { actorOf, auditEntryOf, type SecurityEventInput } from '../../core/audit.ts'
import type { ModuleContext, PlinthApp } from '../../core/module.ts'
import type { Principal } from '../../core/permissions.ts'
import { PlinthError } from '../../shared/errors.ts'
import {
  ChangePasswordBody,
  Id,
  SessionIssued,
  SessionSchema,
  TokenCreateBody,
  TokenSchema,
  TotpConfirmBody,
  TotpDisableBody,
  UserSchema,
} from './accounts.schemas.ts'
import { accountsServices, endSessions, requestMeta, sessionIssued } from './accounts.wiring.ts'

const tags = ['me']
const read = { permission: 'self:read' as const }
const write = { permission: 'self:write' as const }
const iso = (d: Date | null) => (d ? d.toISOString() : null)

/** Changes of credentials need a session: an API token cannot mint tokens or change the password. */
function requireSession(p: Principal): void {
  if (p.kind !== 'session')
    throw new PlinthError('PLINTH_AUTH_FORBIDDEN', 'This needs a signed-in session, not an API token.')
}

/** The caller's own account: profile, password, sessions, API tokens and second factor. */
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
      config: write,
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
      config: write,
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
      config: write,
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
          scopes: request.body.scopes,
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
      config: write,
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

  const enrol = { ...write, allowDuringMfaEnrolment: true }

  api.post(
    '/me/mfa/totp',
    {
      config: enrol,
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
      config: enrol,
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
      config: write,
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
