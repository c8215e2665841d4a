import type { Redis } from 'ioredis'
import type { Logger } from 'pino'
import type { RedisHandle } from '../../infra/cache/redis.ts'

/** One counted request: how many the key made in its current window, and when that window ends. */
export interface RateLimitHit {
  readonly count: number
  /** Milliseconds until the window ends and the count starts again from zero. */
  readonly resetMs: number
}

/**
 * Fixed-window counters: the first request of a key opens a window of `windowMs`; every request
 * in it increments the count. Stores never reject: a failing backend falls back, never to "no limit".
 * In-process counts answer synchronously (no promise on the hot path).
 */
export interface RateLimitStore {
  hit(key: string, windowMs: number): RateLimitHit | Promise<RateLimitHit>
}

/**
 * In-process counters, bounded: above `maxKeys` expired windows are swept, then the oldest keys
 * dropped (a flood of distinct clients may reset some counts, but memory cannot grow without bound).
 */
export function createMemoryRateLimitStore(
  options: { maxKeys?: number; now?: () => number } = {},
): RateLimitStore & { readonly size: number; hit(key: string, windowMs: number): RateLimitHit } {
  const { maxKeys = 100_000, now = Date.now } = options
  const windows = new Map<string, { count: number; resetAt: number }>()
  const evict = (at: number) => {
    for (const [key, w] of windows) if (w.resetAt <= at) windows.delete(key)
    for (const key of windows.keys()) {
      if (windows.size <= maxKeys) break
      windows.delete(key)
    }
  }
  return {
    get size() {
      return windows.size
    },
    hit(key: string, windowMs: number) {
      const at = now()
      let w = windows.get(key)
      if (!w || w.resetAt <= at) {
        // Re-inserted, so that the map stays ordered by window start for eviction.
        windows.delete(key)
        w = { count: 0, resetAt: at + windowMs }
        windows.set(key, w)
        if (windows.size > maxKeys) evict(at)
      }
      w.count++
      return { count: w.count, resetMs: w.resetAt - at }
    },
  }
}

/**
 * INCR and the expiry in one atomic step; a key that somehow lost its TTL gets it back, so no
 * counter can live forever. Windows are timed by Redis, so replicas' clocks do not matter.
 */
const HIT_SCRIPT = `
local count = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return { count, ttl }`

type ScriptedRedis = Redis & {
  plinthRateLimitHit(key: string, windowMs: number): Promise<[number, number]>
}

/** Counters shared by every replica on the same Redis and `PLINTH_REDIS_PREFIX` (keys `rl:<tier>:<client>`). */
export function createRedisRateLimitStore(client: Redis): {
  hit(key: string, windowMs: number): Promise<RateLimitHit>
} {
  const scripted = client as ScriptedRedis
  if (typeof scripted.plinthRateLimitHit !== 'function') {
    client.defineCommand('plinthRateLimitHit', { numberOfKeys: 1, lua: HIT_SCRIPT })
  }
  return {
    async hit(key, windowMs) {
      const [count, ttl] = await scripted.plinthRateLimitHit(`rl:${key}`, windowMs)
      return { count: Number(count), resetMs: Number(ttl) }
    },
  }
}

/** How long one Redis round trip may take before the request is counted in-process instead. */
export const REDIS_HIT_TIMEOUT_MS = 500
/** After a failed or slow round trip, how long requests skip Redis (a silent network costs one timeout, not one per request). */
export const REDIS_RETRY_AFTER_MS = 2000

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms)
  })
  promise.catch(() => {}) // a late rejection after the timeout is expected, not unhandled
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

/**
 * Redis when it answers, in-process counters whenever it does not (not connected, an error, or
 * slower than REDIS_HIT_TIMEOUT_MS, after which Redis is skipped for REDIS_RETRY_AFTER_MS): limits
 * then hold per replica instead of across replicas, and are never lifted. Redis counting resumes
 * by itself once the client is ready again.
 */
export function createFallbackRateLimitStore(
  redis: RedisHandle,
  deps: { logger: Logger; timeoutMs?: number; retryAfterMs?: number },
): RateLimitStore {
  const shared = createRedisRateLimitStore(redis.client)
  const memory = createMemoryRateLimitStore()
  const timeoutMs = deps.timeoutMs ?? REDIS_HIT_TIMEOUT_MS
  const retryAfterMs = deps.retryAfterMs ?? REDIS_RETRY_AFTER_MS
  let retryAt = 0
  const log = deps.logger.child({ component: 'rate-limit' })
  let degraded = false
  const degrade = (reason: string) => {
    if (degraded) return
    degraded = true
    log.warn({ reason }, 'rate limits falling back to in-process counters')
  }
  const viaRedis = async (key: string, windowMs: number): Promise<RateLimitHit> => {
    try {
      const result = await withTimeout(shared.hit(key, windowMs), timeoutMs)
      if (degraded) {
        degraded = false
        log.info('rate limits counted in redis again')
      }
      return result
    } catch (err) {
      retryAt = Date.now() + retryAfterMs
      degrade((err as Error).message)
      return memory.hit(key, windowMs)
    }
  }
  return {
    hit(key, windowMs) {
      if (redis.client.status !== 'ready') {
        degrade(`redis ${redis.client.status}`)
        return memory.hit(key, windowMs)
      }
      if (Date.now() < retryAt) return memory.hit(key, windowMs)
      return viaRedis(key, windowMs)
    },
  }
}
