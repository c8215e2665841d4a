import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { after, before, describe, it } from 'node:test'
import type { InjectOptions } from 'fastify'
import { bearer, createUser, uniqueEmail } from './helpers/accounts.ts'
import { skipUnlessPostgres, skipUnlessRedis, TEST_REDIS_URL } from './helpers/services.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'

/** A reverse proxy Plinth trusts in the "behind a proxy" setup; not itself in the ops networks. */
const PROXY = '192.0.2.10'
const OUTSIDER = '203.0.113.7'

interface AccessRow {
  readonly name: string
  readonly request: Omit<InjectOptions, 'url'>
  readonly operator: boolean
}

/** Operator access as `/health` shows it: operators get the version, others statuses only. */
async function isOperator(plinth: TestPlinth, request: Omit<InjectOptions, 'url'>): Promise<boolean> {
  const res = await plinth.app.inject({ ...request, url: '/health' })
  assert.equal(res.statusCode, 200, res.body)
  const body = res.json()
  assert.equal('latencyMs' in body.components.database, 'version' in body, 'details and version disagree')
  return 'version' in body
}

const xff = (remoteAddress: string, forwarded: string) => ({
  remoteAddress,
  headers: { 'x-forwarded-for': forwarded },
})

/** PLINTH_OPS_NETWORKS=127.0.0.0/8,::1/128,10.0.0.0/8 and PLINTH_TRUST_PROXY=192.0.2.10. */
const behindProxy: readonly AccessRow[] = [
  { name: 'an address inside 10.0.0.0/8 (10.1.2.3)', request: { remoteAddress: '10.1.2.3' }, operator: true },
  { name: 'the last address of 10.0.0.0/8', request: { remoteAddress: '10.255.255.255' }, operator: true },
  { name: 'an address just outside it (11.0.0.1)', request: { remoteAddress: '11.0.0.1' }, operator: false },
  { name: 'an IPv4-mapped address inside it', request: { remoteAddress: '::ffff:10.1.2.3' }, operator: true },
  { name: 'the trusted proxy itself, forwarding nobody', request: { remoteAddress: PROXY }, operator: false },
  { name: 'the trusted proxy forwarding 10.1.2.3', request: xff(PROXY, '10.1.2.3'), operator: true },
  { name: 'the trusted proxy forwarding an outsider', request: xff(PROXY, OUTSIDER), operator: false },
  {
    name: 'the trusted proxy forwarding an outsider who claimed 127.0.0.1 upstream',
    request: xff(PROXY, `127.0.0.1, ${OUTSIDER}`),
    operator: false,
  },
  { name: 'an untrusted peer claiming 127.0.0.1', request: xff(OUTSIDER, '127.0.0.1'), operator: false },
]

/** Defaults: PLINTH_OPS_NETWORKS=127.0.0.0/8,::1/128, no trusted proxy; PLINTH_METRICS_PUBLIC=true. */
const defaults: readonly AccessRow[] = [
  { name: 'IPv6 loopback ::1', request: { remoteAddress: '::1' }, operator: true },
  {
    name: 'IPv4-mapped loopback ::ffff:127.0.0.1',
    request: { remoteAddress: '::ffff:127.0.0.1' },
    operator: true,
  },
  { name: 'another loopback address 127.8.9.10', request: { remoteAddress: '127.8.9.10' }, operator: true },
  {
    name: 'a private address not listed (10.1.2.3)',
    request: { remoteAddress: '10.1.2.3' },
    operator: false,
  },
  {
    name: 'an IPv6 address that is not loopback',
    request: { remoteAddress: '2001:db8::1' },
    operator: false,
  },
  {
    name: 'an outsider claiming 127.0.0.1 in X-Forwarded-For (no proxy is trusted)',
    request: xff(OUTSIDER, '127.0.0.1'),
    operator: false,
  },
  {
    name: 'a loopback peer forwarding an outsider (no proxy is trusted)',
    request: xff('127.0.0.1', OUTSIDER),
    operator: true,
  },
]

for (const backend of ['embedded', 'postgres'] as const) {
  const pgSkip = backend === 'postgres' ? await skipUnlessPostgres() : false

  describe(`ops access behind a trusted proxy on ${backend}`, { skip: pgSkip }, () => {
    let plinth: TestPlinth
    before(async () => {
      plinth = await startTestPlinth({
        backend,
        env: { PLINTH_OPS_NETWORKS: '127.0.0.0/8,::1/128,10.0.0.0/8', PLINTH_TRUST_PROXY: PROXY },
      })
    })
    after(() => plinth?.close())

    for (const row of behindProxy) {
      it(`${row.operator ? 'grants' : 'refuses'} operator access to ${row.name}`, async () => {
        assert.equal(await isOperator(plinth, row.request), row.operator)
        const metrics = await plinth.app.inject({ ...row.request, url: '/api/metrics' })
        assert.equal(metrics.statusCode, row.operator ? 200 : 403)
      })
    }
  })

  describe(`ops access with default networks and public metrics on ${backend}`, { skip: pgSkip }, () => {
    let plinth: TestPlinth
    before(async () => {
      plinth = await startTestPlinth({ backend, env: { PLINTH_METRICS_PUBLIC: 'true' } })
    })
    after(() => plinth?.close())

    for (const row of defaults) {
      it(`${row.operator ? 'grants' : 'refuses'} operator access to ${row.name}`, async () => {
        assert.equal(await isOperator(plinth, row.request), row.operator)
      })
    }

    it('lets anyone scrape /api/metrics when PLINTH_METRICS_PUBLIC=true', async () => {
      const res = await plinth.app.inject({ url: '/api/metrics', remoteAddress: OUTSIDER })
      assert.equal(res.statusCode, 200, res.body)
      assert.match(String(res.headers['content-type']), /^text\/plain/)
      assert.match(res.body, /^# TYPE http_requests_total counter$/m)
    })
  })

  describe(`redis in /health on ${backend}`, {
    skip: pgSkip || (await skipUnlessRedis()),
  }, () => {
    let plinth: TestPlinth
    before(async () => {
      plinth = await startTestPlinth({
        backend,
        env: {
          REDIS_URL: TEST_REDIS_URL,
          PLINTH_REDIS_PREFIX: `plinth-test:ops-${process.pid}-${randomBytes(4).toString('hex')}:`,
        },
      })
    })
    after(() => plinth?.close())

    it('reports redis as a non-critical component with details for operators', async () => {
      const res = await plinth.app.inject('/health')
      assert.equal(res.statusCode, 200, res.body)
      const redis = res.json().components.redis
      assert.equal(redis.status, 'up')
      assert.equal(redis.critical, false)
      assert.equal(typeof redis.latencyMs, 'number')
      assert.deepEqual(redis.details, { state: 'ready' })
    })

    it('reports only the redis status to outsiders', async () => {
      const res = await plinth.app.inject({ url: '/health', remoteAddress: OUTSIDER })
      assert.deepEqual(res.json().components.redis, { status: 'up' })
    })

    it('exposes plinth_redis_connected 1', async () => {
      const res = await plinth.app.inject('/api/metrics')
      assert.match(res.body, /^plinth_redis_connected 1$/m)
    })
  })
}

describe('ops access by an ops:read credential', () => {
  let plinth: TestPlinth
  before(async () => {
    plinth = await startTestPlinth()
  })
  after(() => plinth?.close())

  it('an admin session counts as an operator on /health and /api/metrics, a member session does not', async () => {
    const admin = await createUser(plinth, uniqueEmail('ops-admin'), 'admin')
    const member = await createUser(plinth, uniqueEmail('ops-member'), 'member')
    const as = (token: string) => ({ remoteAddress: OUTSIDER, headers: bearer(token) })
    assert.equal(await isOperator(plinth, as(admin.token)), true)
    assert.equal(await isOperator(plinth, as(member.token)), false)
    assert.equal((await plinth.app.inject({ ...as(admin.token), url: '/api/metrics' })).statusCode, 200)
    assert.equal((await plinth.app.inject({ ...as(member.token), url: '/api/metrics' })).statusCode, 403)

    // (That /ready and /live never look a credential up is shown with the database down, in
    // test/database-faults.test.ts; here they simply answer.)
    assert.equal((await plinth.app.inject({ ...as(admin.token), url: '/ready' })).statusCode, 200)
    assert.equal((await plinth.app.inject({ ...as(admin.token), url: '/live' })).statusCode, 200)
  })
})
