import { createHash } from 'node:crypto'
import { isIPv4, isIPv6 } from 'node:net'
import type { FastifyInstance, FastifyReply, FastifyRequest, preHandlerHookHandler } from 'fastify'
import fp from 'fastify-plugin'
import type { Logger } from 'pino'
import { Counter } from 'prom-client'
import type { RedisHandle } from '../../infra/cache/redis.ts'
import type { Metrics } from '../../observability/metrics.ts'
import { PlinthError } from '../../shared/errors.ts'
import { type RateLimitTier, routeConfig } from '../route-config.ts'
import { PROBLEM_CONTENT_TYPE, problemBody } from './problem-json.ts'
import {
  createFallbackRateLimitStore,
  createMemoryRateLimitStore,
  type RateLimitHit,
  type RateLimitStore,
} from './rate-limit-store.ts'

export const RATE_LIMIT_TIERS: readonly RateLimitTier[] = ['api', 'auth', 'upload']

/** The headers every limited response carries (IETF draft-ietf-httpapi-ratelimit-headers). */
export const RATE_LIMIT_HEADERS = [
  'ratelimit-limit',
  'ratelimit-remaining',
  'ratelimit-reset',
  'ratelimit-policy',
] as const

/** Route-path prefixes exempt unless a route declares a tier: the docs UI loads a dozen assets. */
const EXEMPT_PREFIXES = ['/api/docs']

export interface RateLimitOptions {
  /** Requests per window and client, by tier; 0 turns a tier off. */
  readonly limits: Readonly<Record<RateLimitTier, number>>
  readonly windowMs: number
  /** Shared counters across replicas when set (in-process whenever it fails); in-process otherwise. */
  readonly redis: RedisHandle | undefined
  readonly metrics: Metrics
  readonly logger: Logger
  /** Replaces the store built from `redis` (tests, embedders). */
  readonly store?: RateLimitStore
}

/** IPv4-mapped IPv6 as IPv4; other IPv6 addresses by their /64, the usual allocation of one subscriber. */
export function clientAddress(ip: string): string {
  // An IPv4 address (the common case) has no colon: as is, without the IPv6 parse below.
  if (!ip.includes(':')) return ip
  if (ip.startsWith('::ffff:') && isIPv4(ip.slice(7))) return ip.slice(7)
  const address = ip.split('%', 1)[0] ?? ip
  if (!isIPv6(address)) return ip
  const [head = '', tail] = address.split('::')
  const groups = (part: string | undefined) => (part ? part.split(':') : [])
  const width = (parts: string[]) => parts.reduce((n, p) => n + (p.includes('.') ? 2 : 1), 0)
  const left = groups(head)
  const right = groups(tail)
  const full =
    tail === undefined ? left : [...left, ...Array(8 - width(left) - width(right)).fill('0'), ...right]
  return `${full
    .slice(0, 4)
    .map((g) => Number.parseInt(g, 16).toString(16))
    .join(':')}::/64`
}

/**
 * Who is counted: on the `auth` tier (sign-in, sign-up, password reset, the MFA step…) always the
 * client IP, whatever credential comes with the request — holding sessions or tokens must not buy
 * more guesses; elsewhere the signed-in user (whatever address they call from), otherwise the IP.
 */
export function clientKey(request: FastifyRequest, tier?: RateLimitTier): string {
  const userId = request.principal?.userId
  return userId && tier !== 'auth' ? `user:${userId}` : ipKey(request)
}

/** The counter of one target account (hashed: no e-mail address in Redis keys). */
const accountKey = (tier: RateLimitTier, account: string) =>
  `${tier}:account:${createHash('sha256').update(account).digest('base64url').slice(0, 22)}`

const ipKey = (request: FastifyRequest) => `ip:${clientAddress(request.ip)}`

const under = (path: string, prefix: string) => path === prefix || path.startsWith(`${prefix}/`)

function formatWindow(ms: number): string {
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000} h`
  if (ms % 60_000 === 0) return `${ms / 60_000} min`
  return `${ms / 1000} s`
}

/** Set once the limiter has counted a request. */
const COUNTED = Symbol('plinth.rateLimitCounted')
type Marked = FastifyRequest & { [COUNTED]?: boolean }
const REFUSAL_STATUSES = new Set([401, 403])
/** Addresses blocked at once (before authentication) for too many refused credentials; per replica. */
const MAX_BLOCKED = 100_000
const SWEEP_ABOVE = 1000

/**
 * Per-client rate limits in tiers (see docs/decisions/0005-rate-limiting.md). A route picks its
 * tier with `config: { rateLimit: 'api' | 'auth' | 'upload' | false }` (default `api`); each
 * tier counts separately. Every limited response carries `RateLimit-Limit`, `-Remaining`,
 * `-Reset` and `-Policy`; a refused one is a 429 problem with `Retry-After`.
 *
 * Register it before the plugins that authenticate and before the routes (the per-account hook is
 * attached to each route that declares `rateLimitAccount` as it is added). Counting happens in `preParsing`: after
 * every `onRequest` hook (so `request.principal` is set) and before the body is read. Requests
 * that authentication refuses (401/403) in `onRequest` never get there, so they are counted in
 * `onSend`, before the refusal leaves: an anonymous address has one budget of refusals shared by
 * every replica, the refusal past it is turned into a 429 on whichever replica it lands, and that
 * replica then refuses the address in `onRequest`, before authentication does any work, until its
 * window ends (credential guessing, bogus-token floods).
 */
async function rateLimit(app: FastifyInstance, opts: RateLimitOptions): Promise<void> {
  const { limits, windowMs } = opts
  const store =
    opts.store ??
    (opts.redis
      ? createFallbackRateLimitStore(opts.redis, { logger: opts.logger })
      : createMemoryRateLimitStore())
  const rejected = new Counter({
    name: 'plinth_rate_limited_total',
    help: 'Requests refused with 429 by a rate limit, by tier.',
    labelNames: ['tier'] as const,
    registers: [opts.metrics.registry],
  })
  const windowText = formatWindow(windowMs)
  const tiers = Object.fromEntries(
    RATE_LIMIT_TIERS.map((tier) => {
      const limit = limits[tier]
      rejected.labels(tier).inc(0)
      return [
        tier,
        { limit, policy: `${limit};w=${Math.ceil(windowMs / 1000)}`, rejected: rejected.labels(tier) },
      ]
    }),
  ) as Record<RateLimitTier, { limit: number; policy: string; rejected: Counter.Internal }>
  const blocked = new Map<string, number>()

  /** The route's tier, or false when it is exempt or its tier is off. */
  const tierOf = (request: FastifyRequest): RateLimitTier | false => {
    const config = routeConfig(request)
    const url = config.url
    const name =
      config.rateLimit ?? (url !== undefined && EXEMPT_PREFIXES.some((p) => under(url, p)) ? false : 'api')
    return name !== false && tiers[name].limit > 0 ? name : false
  }
  const refuse = (name: RateLimitTier, resetMs: number, what: string, who = 'client') => {
    const tier = tiers[name]
    const seconds = Math.max(1, Math.ceil(resetMs / 1000))
    tier.rejected.inc()
    return new PlinthError(
      'PLINTH_HTTP_RATE_LIMITED',
      `Too many ${what}: the limit is ${tier.limit} per ${windowText} for this ${who}. Retry after ${seconds} s (Retry-After); RateLimit-Remaining tells what is left on every response.`,
      { headers: { 'retry-after': String(seconds) } },
    )
  }

  app.decorateRequest(COUNTED, false)

  app.addHook('onRequest', (request, reply, done) => {
    if (blocked.size === 0) return done()
    const name = tierOf(request)
    const key = name && `${name}:refused:${ipKey(request)}`
    const until = key ? blocked.get(key) : undefined
    if (!name || !key || until === undefined) return done()
    const left = until - Date.now()
    if (left <= 0) {
      blocked.delete(key)
      return done()
    }
    reply.headers({ 'ratelimit-limit': tiers[name].limit, 'ratelimit-remaining': 0 })
    done(refuse(name, left, 'refused requests (invalid or missing credentials)'))
  })

  app.addHook('preParsing', (request, reply, payload, done) => {
    const name = tierOf(request)
    if (name === false) return done(null, payload)
    const tier = tiers[name]
    ;(request as Marked)[COUNTED] = true
    const settle = ({ count, resetMs }: RateLimitHit) => {
      // One header() each: reply.headers({…}) would build and walk an object per request.
      reply.header('ratelimit-limit', tier.limit)
      reply.header('ratelimit-remaining', Math.max(0, tier.limit - count))
      reply.header('ratelimit-reset', Math.max(1, Math.ceil(resetMs / 1000)))
      reply.header('ratelimit-policy', tier.policy)
      if (count <= tier.limit) done(null, payload)
      else done(refuse(name, resetMs, `${name} requests`))
    }
    const hit = store.hit(`${name}:${clientKey(request, name)}`, windowMs)
    if (!(hit instanceof Promise)) return settle(hit)
    hit.then(settle, (err: unknown) => done(err instanceof Error ? err : new Error(String(err))))
  })

  // A route that names its target account (sign-in, sign-up, reset by e-mail) is also counted per
  // account, once the body is read: guesses spread over many addresses still hit one budget.
  // A hook of those routes only, first of their preHandler hooks: the other routes (nearly all)
  // skip the preHandler phase altogether instead of running a hook that finds nothing to do.
  const countAccount: preHandlerHookHandler = (request, reply, done) => {
    const target = routeConfig(request).rateLimitAccount
    const name = target && tierOf(request)
    if (!target || !name) return done()
    const account = target(request)
    if (!account) return done()
    const tier = tiers[name]
    const settle = ({ count, resetMs }: RateLimitHit) => {
      const left = Math.max(0, tier.limit - count)
      if (left < Number(reply.getHeader('ratelimit-remaining') ?? tier.limit)) {
        reply.header('ratelimit-remaining', left)
        reply.header('ratelimit-reset', Math.max(1, Math.ceil(resetMs / 1000)))
      }
      if (count <= tier.limit) done()
      else done(refuse(name, resetMs, `${name} requests`, 'account'))
    }
    const hit = store.hit(accountKey(name, account), windowMs)
    if (!(hit instanceof Promise)) return settle(hit)
    hit.then(settle, (err: unknown) => done(err instanceof Error ? err : new Error(String(err))))
  }
  app.addHook('onRoute', (route) => {
    if (!route.config?.rateLimitAccount) return
    const own = route.preHandler === undefined ? [] : [route.preHandler].flat()
    route.preHandler = [countAccount, ...own]
  })

  // Refusals (401/403) that never reached preParsing are counted before they are sent, so the
  // count is settled before the client can send its next request. An anonymous address has a
  // budget of refusals shared by every replica (one atomic INCR each): the refusal that goes over
  // it is answered 429 instead, on whichever replica it lands, and that replica then refuses the
  // address in onRequest, before authentication does any work, until the window ends.
  // Callback-style: it runs on every response, and an async hook costs a promise each; only a
  // counted refusal goes asynchronous.
  app.addHook('onSend', (request, reply, payload, done) => {
    if ((request as Marked)[COUNTED] || !REFUSAL_STATUSES.has(reply.statusCode)) return done(null, payload)
    const name = tierOf(request)
    if (name === false) return done(null, payload)
    countRefusal(request, reply, payload, name).then(
      (sent) => done(null, sent),
      (err: unknown) => done(err instanceof Error ? err : new Error(String(err))),
    )
  })

  const countRefusal = async (
    request: FastifyRequest,
    reply: FastifyReply,
    payload: unknown,
    name: RateLimitTier,
  ): Promise<unknown> => {
    // A signed-in caller refused (403) spends its own budget; an anonymous one a separate
    // per-address budget of refusals, so that its ordinary requests are not held against it.
    const anonymous = request.principal === null
    const key = anonymous ? `${name}:refused:${ipKey(request)}` : `${name}:${clientKey(request, name)}`
    // Stores fall back rather than fail; one that fails anyway must not turn a 401 into a 500.
    const hit = await Promise.resolve(store.hit(key, windowMs)).catch(() => undefined)
    if (!hit) return payload
    const { count, resetMs } = hit
    const limit = tiers[name].limit
    if (!anonymous || count < limit) return payload
    const now = Date.now()
    if (blocked.size >= SWEEP_ABOVE) for (const [k, until] of blocked) if (until <= now) blocked.delete(k)
    if (blocked.size >= MAX_BLOCKED) blocked.delete(blocked.keys().next().value as string)
    blocked.set(key, now + resetMs)
    if (count === limit) return payload
    const error = refuse(name, resetMs, 'refused requests (invalid or missing credentials)')
    reply.removeHeader('www-authenticate')
    reply.removeHeader('content-length')
    reply.headers({ ...error.headers, 'ratelimit-limit': limit, 'ratelimit-remaining': 0 })
    reply.code(error.status).type(PROBLEM_CONTENT_TYPE)
    return JSON.stringify(problemBody(error, request.id, request.url))
  }
}

export default fp(rateLimit, { name: 'plinth-rate-limit', fastify: '5.x' })
