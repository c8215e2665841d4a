import { randomUUID } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { ERRORS, type Lock, type Locker, type RequestRelease } from '@tus/utils'
import type { Redis } from 'ioredis'

export interface RedisLockerOptions {
  /** How long a request waits for an upload's lock before tus answers 500 "lock timeout". */
  readonly acquireTimeoutMs?: number
  /** A lock not renewed for this long is free (its replica died). */
  readonly ttlMs?: number
  /** How often a holder renews its lock and looks for a release request; waiters retry as often. */
  readonly intervalMs?: number
}

// Renews the lock when it is still ours, and says whether someone asked for it.
const RENEW = `if redis.call('get', KEYS[1]) == ARGV[1] then
  redis.call('pexpire', KEYS[1], ARGV[2])
  return redis.call('exists', KEYS[2])
end
return -1`
const UNLOCK = `if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0`

/**
 * tus upload locks shared by every replica through Redis (`@tus/server` keeps them in memory, one
 * process only). The holder renews its lock every `intervalMs`; a request that finds the upload
 * locked leaves a release request, which the holder sees at its next renewal and answers the way
 * tus asks: it cancels its own request (a client that lost its connection and resumed elsewhere is
 * not kept waiting by the half-open request it left behind), then the lock is free. A replica that
 * dies holding a lock frees it after `ttlMs`.
 */
export class RedisLocker implements Locker {
  readonly acquireTimeoutMs: number
  readonly ttlMs: number
  readonly intervalMs: number
  readonly redis: Redis

  constructor(redis: Redis, options: RedisLockerOptions = {}) {
    this.redis = redis
    this.acquireTimeoutMs = options.acquireTimeoutMs ?? 30_000
    this.ttlMs = options.ttlMs ?? 10_000
    this.intervalMs = options.intervalMs ?? 250
  }

  newLock(id: string): Lock {
    return new RedisLock(this, id)
  }
}

class RedisLock implements Lock {
  private readonly key: string
  private readonly releaseKey: string
  private readonly token = randomUUID()
  private renewal: NodeJS.Timeout | undefined
  private readonly locker: RedisLocker

  constructor(locker: RedisLocker, id: string) {
    this.locker = locker
    this.key = `tus:lock:${id}`
    this.releaseKey = `tus:release:${id}`
  }

  async lock(signal: AbortSignal, requestRelease: RequestRelease): Promise<void> {
    try {
      await this.acquire(signal, requestRelease)
    } catch (err) {
      if (err === ERRORS.ERR_LOCK_TIMEOUT) throw err
      // Redis is away: the upload cannot be locked safely, so it waits (503), never goes unlocked.
      throw {
        status_code: 503,
        body: JSON.stringify({
          code: 'PLINTH_FILES_STORAGE_UNAVAILABLE',
          detail: 'The upload locks (Redis) are not reachable; try again shortly.',
        }),
      }
    }
  }

  private async acquire(signal: AbortSignal, requestRelease: RequestRelease): Promise<void> {
    const { redis, acquireTimeoutMs, ttlMs, intervalMs } = this.locker
    const deadline = Date.now() + acquireTimeoutMs
    for (;;) {
      if (signal.aborted) throw ERRORS.ERR_LOCK_TIMEOUT
      if ((await redis.set(this.key, this.token, 'PX', ttlMs, 'NX')) === 'OK') break
      // Ask the holder to let go, then try again.
      await redis.set(this.releaseKey, this.token, 'PX', ttlMs)
      if (Date.now() > deadline) throw ERRORS.ERR_LOCK_TIMEOUT
      await sleep(intervalMs, undefined, { signal }).catch(() => {})
    }
    await redis.del(this.releaseKey)
    let asked = false
    this.renewal = setInterval(() => {
      redis
        .eval(RENEW, 2, this.key, this.releaseKey, this.token, String(ttlMs))
        .then((answer) => {
          // Asked to let go, or the lock is no longer ours (it expired): end this request.
          if (!asked && answer !== 0) {
            asked = true
            void requestRelease()
          }
        })
        .catch(() => {})
    }, intervalMs)
    this.renewal.unref()
  }

  async unlock(): Promise<void> {
    clearInterval(this.renewal)
    this.renewal = undefined
    // Unreachable Redis: the lock expires by itself after ttlMs.
    await this.locker.redis.eval(UNLOCK, 1, this.key, this.token).catch(() => {})
  }
}
