import { after, afterEach, before } from 'node:test'
import { Redis } from 'ioredis'
import { TEST_REDIS_URL } from './services.ts'

/**
 * For a suite on the test Redis: a raw client, cleanups run after each test (last first), and
 * `dropKeysAfter(prefix)` to delete what a test wrote under its own prefix. Call inside `describe`.
 */
export function useRedisKit() {
  let raw: Redis | undefined
  const cleanups: (() => Promise<unknown> | unknown)[] = []
  const cleanupAll = async () => {
    for (const fn of cleanups.splice(0).reverse()) await fn()
  }
  before(() => {
    raw = new Redis(TEST_REDIS_URL, { maxRetriesPerRequest: 1 })
  })
  afterEach(cleanupAll)
  after(async () => {
    await cleanupAll()
    raw?.disconnect()
  })
  return {
    get raw(): Redis {
      if (!raw) throw new Error('useRedisKit: the client exists from `before` on')
      return raw
    },
    cleanups,
    /** Deletes every key under `prefix` after the test. */
    dropKeysAfter(prefix: string) {
      cleanups.push(async () => {
        const keys = await this.raw.keys(`${prefix}*`)
        if (keys.length > 0) await this.raw.del(...keys)
      })
    },
  }
}
