import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { connect, createServer, type Socket } from 'node:net'
import { describe, it } from 'node:test'
import { Redis } from 'ioredis'
import { createRedisRateLimitStore, REDIS_HIT_TIMEOUT_MS } from '../src/http/plugins/rate-limit-store.ts'
import { API, LIMITS_ENV, limitsModule } from './helpers/limits-module.ts'
import { captureLogs } from './helpers/log-capture.ts'
import { useRedisKit } from './helpers/redis-kit.ts'
import { skipUnlessRedis, TEST_REDIS_URL } from './helpers/services.ts'
import { startTcpProxy } from './helpers/tcp-proxy.ts'
import { testConfig } from './helpers/test-config.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'
import { waitFor } from './helpers/wait-for.ts'

const redisAddress = new URL(TEST_REDIS_URL)
const redisTarget = { host: redisAddress.hostname, port: Number(redisAddress.port || 6379) }
const uniquePrefix = () => `plinth-test:${process.pid}:${randomBytes(4).toString('hex')}:`

/**
 * A proxy that can go silent: once stalled, what clients send is dropped and nothing is closed,
 * like a network partition without resets (the client sees no error, only no answer).
 */
async function startStallingProxy() {
  const sockets = new Set<Socket>()
  let stalled = false
  const server = createServer((client) => {
    const upstream = connect(redisTarget.port, redisTarget.host)
    sockets.add(client).add(upstream)
    const drop = () => {
      client.destroy()
      upstream.destroy()
    }
    client.on('error', drop).on('close', drop)
    upstream.on('error', drop).on('close', drop)
    client.on('data', (chunk) => {
      if (!stalled) upstream.write(chunk)
    })
    upstream.pipe(client)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as { port: number }
  return {
    url: `redis://127.0.0.1:${port}`,
    stall: () => {
      stalled = true
    },
    close: () => {
      for (const s of sockets) s.destroy()
      return new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
}

describe('rate limits on redis', { skip: await skipUnlessRedis() }, () => {
  const kit = useRedisKit()
  const { cleanups } = kit
  const dropKeysAfter = (prefix: string) => kit.dropKeysAfter(prefix)
  const call = (plinth: TestPlinth, user: string) =>
    plinth.app.inject({ url: API, headers: { 'x-test-user': user } })

  it('counts in one shared budget for two instances on the same redis and prefix', async () => {
    const prefix = uniquePrefix()
    dropKeysAfter(prefix)
    const env = { ...LIMITS_ENV, REDIS_URL: TEST_REDIS_URL, PLINTH_REDIS_PREFIX: prefix }
    // allSettled: if one start fails, the other instance is still closed (an open Redis
    // connection would keep the test process alive).
    const started = await Promise.allSettled([
      startTestPlinth({ env, modules: [limitsModule] }),
      startTestPlinth({ env, modules: [limitsModule] }),
    ])
    for (const s of started) if (s.status === 'fulfilled') cleanups.push(() => s.value.close())
    const [a, b] = started.map((s) => {
      if (s.status === 'rejected') throw s.reason
      return s.value
    }) as [TestPlinth, TestPlinth]
    const seen: [number, unknown][] = []
    for (const instance of [a, b, a, b, a]) {
      const res = await instance.app.inject({ url: API, remoteAddress: '198.51.100.7' })
      seen.push([res.statusCode, res.headers['ratelimit-remaining']])
    }
    assert.deepEqual(seen, [
      [200, '2'],
      [200, '1'],
      [200, '0'],
      [429, '0'],
      [429, '0'],
    ])
    const key = `${prefix}rl:api:ip:198.51.100.7`
    assert.equal(await kit.raw.get(key), '5')
    const ttl = await kit.raw.pttl(key)
    assert.ok(ttl > 0 && ttl <= 60_000, `TTL ${ttl}`)
  })

  it('limits in-process while redis is cut off, never unlimited, and counts in redis again once it is back', async () => {
    const prefix = uniquePrefix()
    dropKeysAfter(prefix)
    const proxy = await startTcpProxy(redisTarget)
    cleanups.push(() => proxy.close())
    const config = testConfig({
      ...LIMITS_ENV,
      REDIS_URL: proxy.through(TEST_REDIS_URL),
      PLINTH_REDIS_PREFIX: prefix,
    })
    const logs = captureLogs(config)
    const plinth = await startTestPlinth({ config, logger: logs.logger, modules: [limitsModule] })
    cleanups.push(() => plinth.close())
    const client = plinth.redis!.client

    assert.equal((await call(plinth, 'before')).statusCode, 200)
    assert.equal(await kit.raw.get(`${prefix}rl:api:user:before`), '1')

    proxy.cut()
    await waitFor('redis seen down', () => client.status !== 'ready', { timeoutMs: 15_000 })
    const during: number[] = []
    for (let i = 0; i < 4; i++) during.push((await call(plinth, 'during')).statusCode)
    assert.deepEqual(during, [200, 200, 200, 429])
    assert.equal(await kit.raw.get(`${prefix}rl:api:user:during`), null)
    const warning = logs.lines().find((l) => l.msg === 'rate limits falling back to in-process counters')
    assert.equal(warning?.level, 'warn')

    proxy.restore()
    await waitFor('redis ready again', () => client.status === 'ready', { timeoutMs: 15_000 })
    assert.equal((await call(plinth, 'after')).statusCode, 200)
    assert.equal(await kit.raw.get(`${prefix}rl:api:user:after`), '1')
    assert.ok(logs.lines().some((l) => l.msg === 'rate limits counted in redis again'))
  })

  it('still limits when redis stops answering without closing, paying one timeout, not one per request', async () => {
    const prefix = uniquePrefix()
    dropKeysAfter(prefix)
    const proxy = await startStallingProxy()
    cleanups.push(() => proxy.close())
    const env = { ...LIMITS_ENV, REDIS_URL: proxy.url, PLINTH_REDIS_PREFIX: prefix }
    const plinth = await startTestPlinth({ env, modules: [limitsModule] })
    cleanups.push(() => plinth.close())
    // Cut before the instance closes, so that its QUIT does not wait for a reply that never comes.
    cleanups.push(() => proxy.close())

    assert.equal((await call(plinth, 'before')).statusCode, 200)
    assert.equal(await kit.raw.get(`${prefix}rl:api:user:before`), '1')
    proxy.stall()
    const started = performance.now()
    const codes: number[] = []
    for (let i = 0; i < 4; i++) codes.push((await call(plinth, 'stalled')).statusCode)
    const elapsed = performance.now() - started
    assert.deepEqual(codes, [200, 200, 200, 429])
    assert.ok(elapsed >= REDIS_HIT_TIMEOUT_MS * 0.9, `no timeout was waited for (${Math.round(elapsed)} ms)`)
    assert.ok(elapsed < REDIS_HIT_TIMEOUT_MS * 2.5, `${Math.round(elapsed)} ms for 4 requests`)
  })

  it('times each window in redis: the key expires with it and the count starts again', async () => {
    const prefix = uniquePrefix()
    dropKeysAfter(prefix)
    const client = new Redis(TEST_REDIS_URL, { keyPrefix: prefix, maxRetriesPerRequest: 1 })
    cleanups.push(() => client.disconnect())
    const store = createRedisRateLimitStore(client)
    const first = await store.hit('api:ip:x', 300)
    assert.equal(first.count, 1)
    assert.ok(first.resetMs > 0 && first.resetMs <= 300, `resetMs ${first.resetMs}`)
    assert.equal((await store.hit('api:ip:x', 300)).count, 2)
    assert.ok((await kit.raw.pttl(`${prefix}rl:api:ip:x`)) <= 300)
    // Redis ends the window: wait for the key to expire there, not for a fixed time
    await waitFor(
      'the window key to expire in redis',
      async () => (await kit.raw.exists(`${prefix}rl:api:ip:x`)) === 0,
      { timeoutMs: 15_000 },
    )
    assert.equal((await store.hit('api:ip:x', 300)).count, 1)
  })
})
