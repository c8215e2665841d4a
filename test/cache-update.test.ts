import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { describe, it } from 'node:test'
import { type Cache, createMemoryCache, createRedisCache } from '../src/infra/cache/cache.ts'
import { createRedis, type RedisHandle } from '../src/infra/cache/redis.ts'
import { createUnknownAccountCounter, FREE_FAILURES, lockAfter } from '../src/modules/accounts/lockout.ts'
import { captureLogs } from './helpers/log-capture.ts'
import { useRedisKit } from './helpers/redis-kit.ts'
import { skipUnlessRedis, TEST_REDIS_URL } from './helpers/services.ts'
import { testConfig } from './helpers/test-config.ts'

const count = (n: number | undefined) => (n ?? 0) + 1

describe('Cache.update in memory', () => {
  it('stores what the change returns, from what was there, with its time to live', async () => {
    let now = 1_000
    const cache = createMemoryCache({ now: () => now })
    assert.equal(await cache.update<number>('n', count, 500), 1)
    assert.equal(await cache.update<number>('n', count, 500), 2)
    assert.equal(await cache.get('n'), 2)
    now += 500
    assert.equal(await cache.get('n'), undefined, 'expired with the time to live of its last update')
    assert.equal(await cache.update<number>('n', count, 500), 1)
  })

  it('loses no update among concurrent callers', async () => {
    const cache = createMemoryCache()
    await Promise.all(Array.from({ length: 100 }, () => cache.update<number>('n', count, 60_000)))
    assert.equal(await cache.get('n'), 100)
  })
})

describe('Cache.update on Redis shared by replicas', { skip: await skipUnlessRedis() }, () => {
  const kit = useRedisKit()

  /** A replica's cache: its own Redis connection, the prefix every replica of the test shares. */
  async function replica(
    prefix: string,
    url = TEST_REDIS_URL,
  ): Promise<{ cache: Cache; redis: RedisHandle; logs: ReturnType<typeof captureLogs> }> {
    const config = testConfig({ REDIS_URL: url, PLINTH_REDIS_PREFIX: prefix })
    const logs = captureLogs(config)
    const redis = createRedis({ ...config, redisUrl: url }, { logger: logs.logger })
    kit.cleanups.push(() => redis.close())
    await redis.connect(2000)
    return { cache: createRedisCache(redis, { logger: logs.logger }), redis, logs }
  }
  const uniquePrefix = () => `plinth-test-cas-${randomBytes(4).toString('hex')}:`

  it('counts every increment from two replicas racing on one key, and keeps the time to live', async () => {
    const prefix = uniquePrefix()
    kit.dropKeysAfter(prefix)
    const [a, b] = [await replica(prefix), await replica(prefix)]
    await Promise.all(
      Array.from({ length: 60 }, (_, i) => (i % 2 === 0 ? a : b).cache.update<number>('n', count, 60_000)),
    )
    assert.equal(await a.cache.get('n'), 60)
    assert.equal(await kit.raw.get(`${prefix}cache:n`), '60', 'kept in Redis, where both replicas read it')
    const ttl = await kit.raw.pttl(`${prefix}cache:n`)
    assert.ok(ttl > 0 && ttl <= 60_000, `time to live ${ttl} ms`)
  })

  it('a change that throws fails the caller and stores nothing, and Redis stays in use', async () => {
    const prefix = uniquePrefix()
    kit.dropKeysAfter(prefix)
    const { cache, logs } = await replica(prefix)
    await assert.rejects(
      cache.update(
        'n',
        () => {
          throw new Error('bad change')
        },
        60_000,
      ),
      /bad change/,
    )
    assert.equal(await kit.raw.exists(`${prefix}cache:n`), 0)
    assert.equal(await cache.update<number>('n', count, 60_000), 1)
    assert.equal(await kit.raw.get(`${prefix}cache:n`), '1')
    assert.equal(logs.lines().filter((l) => l.msg === 'cache falling back to memory').length, 0)
  })

  it('falls back to memory when Redis is away, and says so once', async () => {
    const prefix = uniquePrefix()
    // Nothing listens on port 1.
    const { cache, logs } = await replica(prefix, 'redis://127.0.0.1:1')
    assert.equal(await cache.update<number>('n', count, 60_000), 1)
    assert.equal(await cache.update<number>('n', count, 60_000), 2)
    assert.equal(logs.lines().filter((l) => l.msg === 'cache falling back to memory').length, 1)
  })

  it('an unknown address counts every failure made on two replicas, and locks by that count', async () => {
    const prefix = uniquePrefix()
    kit.dropKeysAfter(prefix)
    const counters = [
      createUnknownAccountCounter((await replica(prefix)).cache),
      createUnknownAccountCounter((await replica(prefix)).cache),
    ]
    const email = `nobody-${randomBytes(4).toString('hex')}@example.test`
    const at = Date.now()
    const attempts = 2 * FREE_FAILURES + 2
    await Promise.all(Array.from({ length: attempts }, (_, i) => counters[i % 2]!.failed(email, () => at)))
    const state = await counters[0]!.get(email)
    assert.equal(state.failures, attempts, 'no failure lost between the replicas')
    assert.deepEqual(
      state.lockedUntil,
      lockAfter(attempts, at),
      'the lock of the last failure, not a shorter one',
    )
  })
})
