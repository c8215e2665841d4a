import type { Logger } from 'pino'
import type { RedisHandle } from './redis.ts'

/**
 * A cache for values that can be lost: JSON-serialisable values with a time to live. Backed by
 * Redis when configured (shared across replicas), in-process otherwise, and in-process whenever
 * Redis fails (a cache miss is always safe; a stale entry never lives longer than its TTL).
 */
export interface Cache {
  get<T>(key: string): Promise<T | undefined>
  set(key: string, value: unknown, ttlMs: number): Promise<void>
  delete(key: string): Promise<void>
}

/** An in-process cache with expiry and a size bound (oldest entries evicted first). */
export function createMemoryCache(options: { maxEntries?: number; now?: () => number } = {}): Cache {
  const { maxEntries = 10_000, now = Date.now } = options
  const entries = new Map<string, { value: unknown; expiresAt: number }>()
  return {
    async get<T>(key: string) {
      const entry = entries.get(key)
      if (!entry) return undefined
      if (entry.expiresAt <= now()) {
        entries.delete(key)
        return undefined
      }
      return entry.value as T
    },
    async set(key, value, ttlMs) {
      entries.delete(key)
      entries.set(key, { value, expiresAt: now() + ttlMs })
      if (entries.size > maxEntries) entries.delete(entries.keys().next().value as string)
    },
    async delete(key) {
      entries.delete(key)
    },
  }
}

/** After a failed or timed-out Redis command, how long reads and writes skip Redis. */
export const CACHE_REDIS_RETRY_AFTER_MS = 2000

/**
 * Redis first, memory as the fallback. Deletes go to both, so a revocation is never undone by a
 * stale in-process copy written while Redis was away. After a failure (or a command slower than
 * `PLINTH_REDIS_COMMAND_TIMEOUT`), reads and writes skip Redis for a moment: a silent Redis costs
 * one timeout now and then, not one per request.
 */
export function createRedisCache(
  redis: RedisHandle,
  deps: { logger: Logger; namespace?: string; retryAfterMs?: number },
): Cache {
  const memory = createMemoryCache()
  const ns = deps.namespace ?? 'cache:'
  const log = deps.logger.child({ component: 'cache' })
  const retryAfterMs = deps.retryAfterMs ?? CACHE_REDIS_RETRY_AFTER_MS
  let skipUntil = 0
  let warned = false
  const degrade = (err: unknown) => {
    skipUntil = Date.now() + retryAfterMs
    if (!warned) log.warn({ reason: (err as Error).message }, 'cache falling back to memory')
    warned = true
  }
  const skipping = () => Date.now() < skipUntil
  return {
    async get<T>(key: string) {
      if (skipping()) return memory.get<T>(key)
      try {
        const raw = await redis.client.get(ns + key)
        warned = false
        return raw === null ? undefined : (JSON.parse(raw) as T)
      } catch (err) {
        degrade(err)
        return memory.get<T>(key)
      }
    },
    async set(key, value, ttlMs) {
      if (skipping()) return memory.set(key, value, ttlMs)
      try {
        await redis.client.set(ns + key, JSON.stringify(value), 'PX', Math.max(1, Math.round(ttlMs)))
      } catch (err) {
        degrade(err)
        await memory.set(key, value, ttlMs)
      }
    },
    async delete(key) {
      await memory.delete(key)
      try {
        await redis.client.del(ns + key)
      } catch (err) {
        degrade(err)
      }
    },
  }
}
