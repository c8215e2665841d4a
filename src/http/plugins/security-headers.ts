import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { routeConfig } from '../route-config.ts'

/** The API answers JSON only: a response may load nothing and be framed by no one. */
export const API_CSP = "default-src 'none'; frame-ancestors 'none'"

/**
 * What the docs UI (@fastify/swagger-ui) needs and no more: its own scripts and stylesheets
 * (Swagger UI also injects `<style>` elements, hence inline styles), the `data:` icons of its CSS,
 * and same-origin fetches (the OpenAPI document and "Try it out"). No inline script, no framing.
 */
export const DOCS_CSP = [
  "default-src 'none'",
  "base-uri 'none'",
  "connect-src 'self'",
  "font-src 'self' data:",
  "form-action 'self'",
  "frame-ancestors 'none'",
  "img-src 'self' data:",
  "script-src 'self'",
  "style-src 'self' 'unsafe-inline'",
].join('; ')

/** One year (the minimum asked is six months), subdomains included; `preload` is the operator's call. */
export const HSTS = 'max-age=31536000; includeSubDomains'

/**
 * Powerful browser features no Plinth page uses. WebAuthn (`publickey-credentials-*`) is left
 * alone on purpose: passkeys may come.
 */
const DENIED_FEATURES = [
  'accelerometer',
  'autoplay',
  'bluetooth',
  'browsing-topics',
  'camera',
  'display-capture',
  'geolocation',
  'gyroscope',
  'hid',
  'magnetometer',
  'microphone',
  'midi',
  'payment',
  'serial',
  'usb',
  'xr-spatial-tracking',
]
export const PERMISSIONS_POLICY = DENIED_FEATURES.map((feature) => `${feature}=()`).join(', ')

/**
 * `same-origin`: no Referer leaves for another site (like `no-referrer`), while same-origin
 * requests from Plinth's own pages (docs UI, console) keep their `Origin` header. Under
 * `no-referrer` browsers send `Origin: null` on same-origin POSTs, which defeats Origin-based CSRF checks.
 */
export const REFERRER_POLICY = 'same-origin'

export interface SecurityHeadersOptions {
  /** Send Strict-Transport-Security: in production (behind a TLS proxy) and when serving TLS directly. */
  readonly hsts: boolean
  /**
   * Content-Security-Policy by route-path prefix (the longest matching prefix wins; a route's own
   * `config.csp` wins over any prefix). `/api/docs` → DOCS_CSP is always included; anything else
   * gets API_CSP.
   */
  readonly cspByPrefix?: Readonly<Record<string, string>>
}

export interface SecurityHeaders {
  /** Gives every route under `prefix` this Content-Security-Policy (e.g. the ops console); call before `ready`. */
  cspForPrefix(prefix: string, policy: string): void
}

declare module 'fastify' {
  interface FastifyInstance {
    securityHeaders: SecurityHeaders
  }
}

type HeaderSet = Readonly<Record<string, string>>

/** The headers every response carries, whatever its route (no Content-Security-Policy). */
export function commonSecurityHeaders(hsts: boolean): HeaderSet {
  return {
    'x-content-type-options': 'nosniff',
    'x-frame-options': 'DENY',
    'referrer-policy': REFERRER_POLICY,
    'permissions-policy': PERMISSIONS_POLICY,
    'cross-origin-resource-policy': 'same-origin',
    'cross-origin-opener-policy': 'same-origin',
    ...(hsts ? { 'strict-transport-security': HSTS } : {}),
  }
}

/**
 * Every security header of an API response (the strict API CSP): for answers written outside
 * Fastify's hooks (malformed URLs, over-long parameters, HTTP parser errors).
 */
export function apiSecurityHeaders(hsts: boolean): HeaderSet {
  return Object.freeze({ ...commonSecurityHeaders(hsts), 'content-security-policy': API_CSP })
}

/** True when `path` is `prefix` or lies beneath it (`/api/docs` covers `/api/docs/json`, not `/api/docsx`). */
const under = (path: string, prefix: string) =>
  path === prefix || (path.startsWith(prefix) && (prefix.endsWith('/') || path[prefix.length] === '/'))

/**
 * Security headers on every response, errors and 404s included: the hook runs first in
 * `onRequest`, so even answers from later hooks (overload 503, rate-limit 429, CORS preflights)
 * carry them. The header sets are computed once per policy, not per request.
 */
async function securityHeaders(app: FastifyInstance, opts: SecurityHeadersOptions): Promise<void> {
  const common = commonSecurityHeaders(opts.hsts)
  let prefixes: [string, string][] = []
  const setPrefixes = (map: Readonly<Record<string, string>>) => {
    prefixes = Object.entries(map).sort(([a], [b]) => b.length - a.length)
  }
  setPrefixes({ '/api/docs': DOCS_CSP, ...opts.cspByPrefix })

  const cspOfRoute = new Map<string, string>()
  // Name/value pairs per policy: set with one reply.header() each, no object walked per request.
  const sets = new Map<string, readonly (readonly [string, string])[]>()
  const headersFor = (csp: string) => {
    let set = sets.get(csp)
    if (!set) {
      set = Object.freeze(Object.entries({ ...common, 'content-security-policy': csp }))
      sets.set(csp, set)
    }
    return set
  }
  const cspOf = (url: string | undefined): string => {
    if (url === undefined) return API_CSP
    let csp = cspOfRoute.get(url)
    if (csp === undefined) {
      csp = prefixes.find(([prefix]) => under(url, prefix))?.[1] ?? API_CSP
      cspOfRoute.set(url, csp)
    }
    return csp
  }

  app.decorate('securityHeaders', {
    cspForPrefix(prefix: string, policy: string) {
      setPrefixes({ ...Object.fromEntries(prefixes), [prefix]: policy })
      cspOfRoute.clear()
    },
  } satisfies SecurityHeaders)

  app.addHook('onRequest', (request, reply, done) => {
    const config = routeConfig(request)
    const set = headersFor(config.csp ?? cspOf(config.url))
    for (let i = 0; i < set.length; i++) reply.header(set[i]![0], set[i]![1])
    done()
  })
  // Nothing in Plinth sets it, but a third-party plugin might: it only advertises the stack.
  app.addHook('onSend', (_request, reply, payload, done) => {
    if (reply.hasHeader('x-powered-by')) reply.removeHeader('x-powered-by')
    done(null, payload)
  })
}

export default fp(securityHeaders, { name: 'plinth-security-headers', fastify: '5.x' })
