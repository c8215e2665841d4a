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
  /**
   * Reads the value at `key`, passes it to `change` and stores what that returns for `ttlMs`, as one
   * step: two callers, in this process or on replicas sharing Redis, never both start from the same
   * value and overwrite each other (a count kept this way loses no increment). `change` must be a
   * pure function of its argument: it runs again when the value changed under it. Returns the value
   * stored.
   */
  update<T>(key: string, change: (current: T | undefined) => T, ttlMs: number): Promise<T>
}

/** An in-process cache with expiry and a size bound (oldest entries evicted first). */
export function createMemoryCache(options: { maxEntries?: number; now?: () => number } = {}): Cache {
  const { maxEntries = 10_000, now = Date.now } = options
  const entries = new Map<string, { value: unknown; expiresAt: number }>()
  const read = <T>(key: string): T | undefined => {
    const entry = entries.get(key)
    if (!entry) return undefined
    if (entry.expiresAt <= now()) {
      entries.delete(key)
      return undefined
    }
    return entry.value as T
  }
  const write = (key: string, value: unknown, ttlMs: number) => {
    entries.delete(key)
    entries.set(key, { value, expiresAt: now() + ttlMs })
    if (entries.size > maxEntries) entries.delete(entries.keys().next().value as string)
  }
  return {
    async get<T>(key: string) {
      return read<T>(key)
    },
    async set(key, value, ttlMs) {
      write(key, value, ttlMs)
    },
    async delete(key) {
      entries.delete(key)
    },
    // Nothing awaits between the read and the write: one step in this process.
    async update<T>(key: string, change: (current: T | undefined) => T, ttlMs: number) {
      const value = change(read<T>(key))
      write(key, value, ttlMs)
      return value
    },
  }
}

/**
 * Compare-and-set in Redis: stores ARGV[3] for ARGV[4] ms only if the key still holds ARGV[2]
 * (ARGV[1] = '1') or is still absent (ARGV[1] = '0'); 1 when it stored, 0 when the value changed.
 */
const COMPARE_AND_SET = `local current = redis.call('GET', KEYS[1])
if ARGV[1] == '0' then
  if current then return 0 end
elseif current ~= ARGV[2] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
return 1`

/** How many times `update` reads again after losing a race before it gives up (an error). */
export const CACHE_UPDATE_ATTEMPTS = 50

type CompareAndSet = (
  key: string,
  expects: '0' | '1',
  expected: string,
  value: string,
  ttlMs: number,
) => Promise<number>

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
  // Sent as EVALSHA, with EVAL once per connection that does not know it yet.
  redis.client.defineCommand('plinthCompareAndSet', { numberOfKeys: 1, lua: COMPARE_AND_SET })
  const compareAndSet = (
    redis.client as unknown as { plinthCompareAndSet: CompareAndSet }
  ).plinthCompareAndSet.bind(redis.client)
  const ttl = (ttlMs: number) => Math.max(1, Math.round(ttlMs))
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
        await redis.client.set(ns + key, JSON.stringify(value), 'PX', ttl(ttlMs))
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
    async update<T>(key: string, change: (current: T | undefined) => T, ttlMs: number) {
      for (let attempt = 0; attempt < CACHE_UPDATE_ATTEMPTS; attempt++) {
        if (skipping()) return memory.update(key, change, ttlMs)
        let raw: string | null
        let current: T | undefined
        try {
          raw = await redis.client.get(ns + key)
          current = raw === null ? undefined : (JSON.parse(raw) as T)
        } catch (err) {
          degrade(err)
          return memory.update(key, change, ttlMs)
        }
        // Outside the try: a change that throws is the caller's failure, not Redis's.
        const value = change(current)
        try {
          const stored = await compareAndSet(
            ns + key,
            raw === null ? '0' : '1',
            raw ?? '',
            JSON.stringify(value),
            ttl(ttlMs),
          )
          if (stored === 1) {
            warned = false
            return value
          }
        } catch (err) {
          degrade(err)
          return memory.update(key, change, ttlMs)
        }
      }
      throw new Error(`cache update of "${key}" lost the race ${CACHE_UPDATE_ATTEMPTS} times`)
    },
  }
}
