import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { describe, it } from 'node:test'
import type { PlinthApp } from '../src/http/create-server.ts'
import { captureLogs } from './helpers/log-capture.ts'
import { useRedisKit } from './helpers/redis-kit.ts'
import { skipUnlessRedis, TEST_REDIS_URL } from './helpers/services.ts'
import { startTcpProxy } from './helpers/tcp-proxy.ts'
import { testConfig } from './helpers/test-config.ts'
import { startTestPlinth } from './helpers/test-plinth.ts'
import { waitFor } from './helpers/wait-for.ts'

const redisAddress = new URL(TEST_REDIS_URL)
const redisTarget = { host: redisAddress.hostname, port: Number(redisAddress.port || 6379) }
const uniquePrefix = () => `plinth-test:${process.pid}:${randomBytes(4).toString('hex')}:`

async function redisConnected(app: PlinthApp): Promise<number> {
  const res = await app.inject('/api/metrics')
  assert.equal(res.statusCode, 200)
  const m = /^plinth_redis_connected (\d+)$/m.exec(res.body)
  assert.ok(m, 'plinth_redis_connected is not exported')
  return Number(m[1])
}

async function redisHealth(app: PlinthApp) {
  const res = await app.inject('/health')
  const body = res.json() as {
    status: string
    components: Record<string, { status: string; critical?: boolean }>
  }
  return { statusCode: res.statusCode, status: body.status, redis: body.components.redis }
}

describe('redis', { skip: await skipUnlessRedis() }, () => {
  const kit = useRedisKit()
  const { cleanups } = kit
  const dropKeysAfter = (prefix: string) => kit.dropKeysAfter(prefix)

  it('reports redis up to operators, exports it as connected and prefixes every key', async () => {
    const prefix = uniquePrefix()
    dropKeysAfter(prefix)
    const plinth = await startTestPlinth({ env: { REDIS_URL: TEST_REDIS_URL, PLINTH_REDIS_PREFIX: prefix } })
    cleanups.push(() => plinth.close())

    const health = await redisHealth(plinth.app)
    assert.equal(health.statusCode, 200)
    assert.equal(health.redis?.status, 'up')
    assert.equal(health.redis?.critical, false)
    assert.equal(await redisConnected(plinth.app), 1)

    await plinth.redis!.client.set('greeting', 'hello')
    assert.equal(await kit.raw.get(`${prefix}greeting`), 'hello')
    assert.equal(await plinth.redis!.client.get('greeting'), 'hello')
    assert.deepEqual(await kit.raw.keys(`${prefix}*`), [`${prefix}greeting`])
  })

  it('boots without redis, reports it degraded but stays ready, and reconnects by itself', async () => {
    const prefix = uniquePrefix()
    dropKeysAfter(prefix)
    const proxy = await startTcpProxy(redisTarget)
    cleanups.push(() => proxy.close())
    proxy.cut()
    const config = testConfig({ REDIS_URL: proxy.through(TEST_REDIS_URL), PLINTH_REDIS_PREFIX: prefix })
    const logs = captureLogs(config)
    const plinth = await startTestPlinth({ config, logger: logs.logger, prepare: false })
    cleanups.push(() => plinth.close())

    // The embedded database starts in its worker first, so that only Redis and the migrations are
    // timed: Plinth waits at most 2 s for Redis, and one that held the boot would hold it for good.
    await plinth.db.connect()
    const started = performance.now()
    await plinth.prepare()
    const elapsed = performance.now() - started
    assert.ok(elapsed < 10_000, `redis held the boot for ${Math.round(elapsed)} ms`)
    const warning = logs.lines().find((l) => l.msg === 'starting without redis')
    assert.ok(warning, 'no "starting without redis" warning')
    assert.equal(warning.level, 'warn')

    const down = await redisHealth(plinth.app)
    assert.deepEqual([down.statusCode, down.status, down.redis?.status], [200, 'degraded', 'down'])
    assert.equal((await plinth.app.inject('/ready')).statusCode, 200)
    assert.equal(await redisConnected(plinth.app), 0)
    // Commands fail fast while redis is away (no offline queue) rather than hang.
    await assert.rejects(plinth.redis!.client.set('lost', '1'))

    proxy.restore()
    await waitFor('redis back up', async () => (await redisHealth(plinth.app)).redis?.status === 'up', {
      timeoutMs: 15_000,
      intervalMs: 100,
    })
    const up = await redisHealth(plinth.app)
    assert.equal(up.statusCode, 200)
    assert.notEqual(up.status, 'down')
    assert.equal(await redisConnected(plinth.app), 1)
    await plinth.redis!.client.set('back', '1')
    assert.equal(await kit.raw.get(`${prefix}back`), '1')

    const retries = logs.lines().filter((l) => l.msg === 'redis not reachable, retrying')
    assert.ok(retries.length >= 1, 'no reconnection attempt was logged')
    for (const line of retries) {
      assert.equal(typeof line.attempt, 'number')
      assert.equal(typeof line.delayMs, 'number')
    }
    assert.ok(logs.lines().some((l) => l.msg === 'redis connected'))
  })
})
