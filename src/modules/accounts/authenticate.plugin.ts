import { createHmac, randomBytes } from 'node:crypto'
import cookie from '@fastify/cookie'
import type { FastifyContextConfig, FastifyInstance, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { SESSION_COOKIE } from '../../core/identity.ts'
import { isKnownPermission, type Principal, principalCan } from '../../core/permissions.ts'
import { routeConfig } from '../../core/route-config.ts'
import { PlinthError } from '../../shared/errors.ts'
import type { ApiTokenService } from './api-tokens.service.ts'
import { safeEqual, TOKEN_PREFIX } from './secrets.ts'
import type { SessionService } from './sessions.service.ts'

export { SESSION_COOKIE }
export const CSRF_HEADER = 'x-csrf-token'
const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS'])

declare module 'fastify' {
  interface FastifyRequest {
    /** Set when the session must enrol a second factor before anything else. */
    mfaEnrolmentPending: boolean
  }
}

export interface AuthenticateOptions {
  readonly sessions: SessionService
  readonly tokens: ApiTokenService
  /** Key for CSRF tokens; a random per-process key when absent (development and test only). */
  readonly secretKey: string | undefined
}

/** The operations routes (http/ops-routes.ts): public, and never wait on a credential lookup. */
const OPS_ROUTES = new Set(['/live', '/ready', '/health', '/api/metrics'])
/** Of them, those that show more to operators (an ops:read credential may count, if it resolves). */
const OPS_DETAIL_ROUTES = new Set(['/health', '/api/metrics'])

/** Routes Plinth does not write itself (docs UI assets, CORS preflight) count as public. */
function isThirdPartyPublic(url: string): boolean {
  return url === '*' || url === '/api/docs' || url.startsWith('/api/docs/')
}

/** The CSRF token of a session: an HMAC of its id, so nothing extra is stored. */
export function csrfToken(sessionId: string, key: string): string {
  return createHmac('sha256', key).update(`csrf:${sessionId}`).digest('base64url')
}

function credentialOf(request: FastifyRequest): { token: string; via: 'cookie' | 'bearer' } | undefined {
  const header = request.headers.authorization
  if (header?.startsWith('Bearer ')) {
    const token = header.slice(7).trim()
    // PLINTH_OPS_TOKEN is a bearer too; only Plinth's own prefixes are account credentials.
    if (token.startsWith(TOKEN_PREFIX.session) || token.startsWith(TOKEN_PREFIX.apiToken))
      return { token, via: 'bearer' }
    return undefined
  }
  const fromCookie = request.cookies[SESSION_COOKIE]
  return fromCookie ? { token: fromCookie, via: 'cookie' } : undefined
}

/**
 * Resolves `request.principal` from a session (cookie or bearer) or an API token, then enforces
 * the route's declared permission: 401 without a valid credential, 403 without the permission,
 * 403 without the CSRF header on cookie-authenticated changes. Every route must declare
 * `permission` or `public`: a route that declares neither stops the boot.
 */
async function authenticate(app: FastifyInstance, opts: AuthenticateOptions): Promise<void> {
  const csrfKey = opts.secretKey ?? randomBytes(32).toString('base64url')
  // Its hook parses the Cookie header of every request that has one (none: nothing to parse), so
  // `request.cookies` is there for every module, as @fastify/cookie documents it.
  await app.register(cookie)
  app.decorateRequest('mfaEnrolmentPending', false)
  // The token of a session never changes: remember the last few thousand (an HMAC per request
  // was ~4% of an authenticated read's CPU, decision 0017). Bounded: cleared when full.
  const csrfTokens = new Map<string, string>()
  const csrfTokenOf = (sessionId: string) => {
    let token = csrfTokens.get(sessionId)
    if (token === undefined) {
      if (csrfTokens.size >= 10_000) csrfTokens.clear()
      token = csrfToken(sessionId, csrfKey)
      csrfTokens.set(sessionId, token)
    }
    return token
  }
  app.decorate('csrfTokenFor', csrfTokenOf)

  app.addHook('onRoute', (route) => {
    const config = route.config as { public?: boolean; permission?: string } | undefined
    const name = `route ${[route.method].flat().join(',')} ${route.url}`
    // A typo would otherwise refuse everyone (admins included); both would silently make it public.
    if (config?.permission !== undefined && !isKnownPermission(config.permission))
      throw new Error(
        `${name} declares the unknown permission "${config.permission}" (see core/permissions.ts, or declare it in its module's permissions)`,
      )
    if (config?.public && config.permission !== undefined)
      throw new Error(`${name} declares both config.permission and config.public: keep one`)
    if (config?.public || config?.permission || isThirdPartyPublic(route.url)) return
    throw new Error(`${name} declares neither config.permission nor config.public`)
  })

  // Answers about a caller, or that carry a credential (sign-in, sign-up, MFA), must not be kept
  // by a browser or a shared cache (ASVS 8.2.1); a route that sets Cache-Control itself keeps it.
  app.addHook('onSend', (request, reply, payload, done) => {
    const config = routeConfig(request)
    if (
      !reply.hasHeader('cache-control') &&
      (config.permission !== undefined ||
        config.rateLimit === 'auth' ||
        request.principal !== null ||
        reply.hasHeader('set-cookie'))
    )
      reply.header('cache-control', 'no-store')
    done(null, payload)
  })

  // A holder of ops:read is an operator. On the operations routes the credential is looked up only
  // here, only for /health and /api/metrics, only when no network or ops-token rule already said
  // yes, and a failed lookup (database down) means "not an operator", never an error.
  app.opsAccess.addAuthorizer(async (request) => {
    if (request.principal) return principalCan(request.principal, 'ops:read')
    if (!OPS_DETAIL_ROUTES.has(routeConfig(request).url ?? '')) return false
    const credential = credentialOf(request)
    if (!credential) return false
    const found = await resolve(credential.token, credential.via).catch(() => null)
    return found !== null && !found.mfaEnrolmentPending && principalCan(found.principal, 'ops:read')
  })

  /** Why the route refuses this request, or undefined: its permission, MFA enrolment, CSRF. */
  const refusal = (
    request: FastifyRequest,
    config: FastifyContextConfig,
    presentedInvalid: boolean,
  ): PlinthError | undefined => {
    if (config.public || !config.permission) return undefined
    const principal = request.principal
    if (!principal)
      return new PlinthError(presentedInvalid ? 'PLINTH_AUTH_SESSION_EXPIRED' : 'PLINTH_AUTH_REQUIRED')
    if (request.mfaEnrolmentPending && !config.allowDuringMfaEnrolment)
      return new PlinthError('PLINTH_AUTH_MFA_ENROLMENT_REQUIRED')
    if (!principalCan(principal, config.permission))
      return new PlinthError('PLINTH_AUTH_FORBIDDEN', `This needs the permission ${config.permission}.`)
    if (principal.via === 'cookie' && !SAFE_METHODS.has(request.method)) {
      const sent = request.headers[CSRF_HEADER]
      if (
        typeof sent !== 'string' ||
        !principal.sessionId ||
        !safeEqual(sent, csrfTokenOf(principal.sessionId))
      )
        return new PlinthError('PLINTH_AUTH_CSRF')
    }
    return undefined
  }

  // Callback-style: it runs on every request, public ones included, and an async hook costs a
  // promise and a microtask each; only a request that presents a credential waits (its lookup).
  app.addHook('onRequest', (request, _reply, done) => {
    const config = routeConfig(request)
    // Probes and scrapers must answer whatever credential comes along, database down or not.
    if (OPS_ROUTES.has(config.url ?? '')) return done()
    const credential = credentialOf(request)
    if (!credential) return done(refusal(request, config, false))
    resolve(credential.token, credential.via)
      .then((found) => {
        if (found) request.principal = found.principal
        request.mfaEnrolmentPending = found?.mfaEnrolmentPending ?? false
        return refusal(request, config, found === null)
      })
      // One place calls done(): a lookup that fails (database down) or a check that throws becomes
      // the request's error, as in the async hook this replaced, never a request left hanging.
      .then(
        (refused) => done(refused),
        (err: unknown) => done(err instanceof Error ? err : new Error(String(err))),
      )
  })

  async function resolve(
    token: string,
    via: 'cookie' | 'bearer',
  ): Promise<{ principal: Principal; mfaEnrolmentPending: boolean } | null> {
    if (via === 'bearer' && token.startsWith(TOKEN_PREFIX.apiToken)) {
      const t = await opts.tokens.resolve(token)
      return t
        ? {
            principal: {
              kind: 'token',
              userId: t.userId,
              role: t.role,
              tokenId: t.tokenId,
              scopes: t.scopes,
              via,
            },
            // The owner's role requires a second factor they lack: refused like such a session.
            mfaEnrolmentPending: t.mfaEnrolmentPending ?? false,
          }
        : null
    }
    const s = await opts.sessions.resolve(token)
    return s
      ? {
          principal: { kind: 'session', userId: s.userId, role: s.role, sessionId: s.sessionId, via },
          mfaEnrolmentPending: s.mfaEnrolmentPending,
        }
      : null
  }
}

declare module 'fastify' {
  interface FastifyInstance {
    /** The CSRF token clients send in X-CSRF-Token with cookie-authenticated changes. */
    csrfTokenFor(sessionId: string): string
  }
}

export default fp(authenticate, {
  name: 'plinth-authenticate',
  fastify: '5.x',
  dependencies: ['plinth-ops-access'],
})
