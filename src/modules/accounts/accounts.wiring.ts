import type { FastifyReply, FastifyRequest } from 'fastify'
import type { Transaction } from 'kysely'
import { auditEntryOf, type SecurityEventInput } from '../../core/audit.ts'
import type { ModuleContext } from '../../core/module.ts'
import type { PlinthTables } from '../../infra/db/tables.ts'
import { createAdminService } from './admin.service.ts'
import { createApiTokenService } from './api-tokens.service.ts'
import { SESSION_COOKIE } from './authenticate.plugin.ts'
import { createCredentialAttempts } from './credential-attempts.ts'
import { createLoginService, type RequestMeta } from './login.service.ts'
import { createMfaService } from './mfa.service.ts'
import { createProfiles } from './profiles.ts'
import { createAccountService } from './registration.service.ts'
import { createSessionService } from './sessions.service.ts'

function build(ctx: ModuleContext) {
  const { config, now } = ctx
  const db = ctx.db.kysely
  const sessions = createSessionService({
    db,
    cache: ctx.cache,
    idleTimeoutMs: config.sessionIdleTimeout,
    maxAgeMs: config.sessionMaxAge,
    now,
  })
  const tokens = createApiTokenService({ db, cache: ctx.cache, now })
  const { audit } = ctx
  // One lockout for every check of a password or a second factor, wherever it happens.
  const attempts = createCredentialAttempts({ db, audit, events: ctx.securityEvents, now })
  const mfa = createMfaService({
    db,
    keyring: ctx.keyring,
    sessions,
    attempts,
    cache: ctx.cache,
    events: ctx.securityEvents,
    audit,
    now,
  })
  const login = createLoginService({
    db,
    cache: ctx.cache,
    sessions,
    attempts,
    secondFactor: mfa.secondFactor,
    events: ctx.securityEvents,
    audit,
    now,
  })
  const accounts = createAccountService({
    db,
    sessions,
    attempts,
    secondFactor: mfa.secondFactor,
    events: ctx.securityEvents,
    audit,
    mailer: ctx.mailer,
    logger: ctx.logger,
    signupMode: config.signupMode,
    linkBase: (config.publicUrl ?? `http://localhost:${config.port}`).replace(/\/$/, ''),
    now,
  })
  const admin = createAdminService({
    db,
    sessions,
    tokens,
    cache: ctx.cache,
    events: ctx.securityEvents,
    audit,
    now,
  })
  const profiles = createProfiles({ cache: ctx.cache, admin, mfa, events: ctx.securityEvents })
  return Object.freeze({ sessions, tokens, mfa, login, accounts, admin, profiles })
}

export type AccountsServices = ReturnType<typeof build>

const built = new WeakMap<ModuleContext, AccountsServices>()

/** The accounts services of one Plinth instance (built once per module context). */
export function accountsServices(ctx: ModuleContext): AccountsServices {
  let services = built.get(ctx)
  if (!services) {
    services = build(ctx)
    built.set(ctx, services)
  }
  return services
}

/**
 * Ends sessions of `userId` with `revoke` and records `event(count)` in the same transaction (no
 * event, and nothing recorded, when `event` returns undefined); cached lookups are dropped after
 * the commit, then the event is emitted. Returns how many sessions ended.
 */
export async function endSessions(
  ctx: ModuleContext,
  userId: string,
  revoke: (trx: Transaction<PlinthTables>) => Promise<number>,
  event: (count: number) => SecurityEventInput | undefined,
): Promise<number> {
  const { count, emitted } = await ctx.db.kysely.transaction().execute(async (trx) => {
    const count = await revoke(trx)
    const emitted = event(count)
    if (emitted) await ctx.audit.record(trx, auditEntryOf(emitted))
    return { count, emitted }
  })
  await accountsServices(ctx).sessions.forgetRevoked(userId)
  if (emitted) ctx.securityEvents.emit(emitted)
  return count
}

export function requestMeta(request: FastifyRequest): RequestMeta {
  const ua = request.headers['user-agent']
  return { ip: request.ip, userAgent: typeof ua === 'string' ? ua : undefined, requestId: request.id }
}

/** Sets the session cookie: HttpOnly, SameSite=Lax, Secure outside development and test. */
export function setSessionCookie(
  reply: FastifyReply,
  ctx: ModuleContext,
  token: string,
  expiresAt: Date,
): void {
  reply.setCookie(SESSION_COOKIE, token, {
    httpOnly: true,
    sameSite: 'lax',
    secure: ctx.config.env !== 'development' && ctx.config.env !== 'test',
    path: '/',
    expires: expiresAt,
  })
}

export function clearSessionCookie(reply: FastifyReply): void {
  reply.clearCookie(SESSION_COOKIE, { path: '/' })
}

/**
 * Answers with a new session: sets the cookie and returns what programs need (the token, its
 * expiry and the session's CSRF token for cookie clients).
 */
export function sessionIssued(
  app: { csrfTokenFor(sessionId: string): string },
  reply: FastifyReply,
  ctx: ModuleContext,
  session: { token: string; sessionId: string; expiresAt: Date },
  mfaEnrolmentRequired = false,
) {
  setSessionCookie(reply, ctx, session.token, session.expiresAt)
  return {
    token: session.token,
    expiresAt: session.expiresAt.toISOString(),
    csrfToken: app.csrfTokenFor(session.sessionId),
    mfaEnrolmentRequired,
  }
}
