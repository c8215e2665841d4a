import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { after, before, describe, it } from 'node:test'
import type { InjectOptions } from 'fastify'
import { PLINTH_VERSION } from '../src/core/version.ts'
import { assertProblem } from './helpers/assert-problem.ts'
import { checkMetrics, skipUnlessPromtool } from './helpers/promtool.ts'
import { skipUnlessPostgres } from './helpers/services.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'

const TOKEN = `ops-${randomBytes(24).toString('hex')}`
const OUTSIDER = '203.0.113.7'
const promtoolSkip = await skipUnlessPromtool()

interface Caller {
  readonly name: string
  readonly request: Omit<InjectOptions, 'url'>
}

const operators: readonly Caller[] = [
  { name: 'the default inject address (127.0.0.1)', request: {} },
  { name: 'an explicit 127.0.0.1', request: { remoteAddress: '127.0.0.1' } },
  {
    name: 'an outsider with the ops token',
    request: { remoteAddress: OUTSIDER, headers: { authorization: `Bearer ${TOKEN}` } },
  },
]
const outsiders: readonly Caller[] = [
  { name: 'an outsider without a token', request: { remoteAddress: OUTSIDER } },
  {
    name: 'an outsider with a wrong token',
    request: { remoteAddress: OUTSIDER, headers: { authorization: `Bearer ${TOKEN}x` } },
  },
  {
    name: 'an outsider sending the token without the Bearer scheme',
    request: { remoteAddress: OUTSIDER, headers: { authorization: TOKEN } },
  },
]

/** Lines of a Prometheus exposition for one metric family (samples only). */
const samples = (text: string, name: string) =>
  text.split('\n').filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `))

for (const backend of ['embedded', 'postgres'] as const) {
  describe(`operations endpoints on ${backend}`, {
    skip: backend === 'postgres' ? await skipUnlessPostgres() : false,
  }, () => {
    let plinth: TestPlinth
    before(async () => {
      plinth = await startTestPlinth({ backend, env: { PLINTH_OPS_TOKEN: TOKEN } })
    })
    after(() => plinth?.close())

    it('answers /live with 200 {status: ok}', async () => {
      const res = await plinth.app.inject('/live')
      assert.equal(res.statusCode, 200)
      assert.deepEqual(res.json(), { status: 'ok' })
    })

    it('answers /ready with 200 and nothing failing when the database answers and migrations are current', async () => {
      const res = await plinth.app.inject('/ready')
      assert.equal(res.statusCode, 200, res.body)
      assert.deepEqual(res.json(), { status: 'ok', failing: [] })
    })

    it('answers /ready with 503 naming the migrations while one is pending, and 200 once applied', async () => {
      const reverted = await plinth.migrator.down()
      assert.equal(reverted.length, 1)
      try {
        const res = await plinth.app.inject('/ready')
        assert.equal(res.statusCode, 503, res.body)
        const body = res.json()
        assert.equal(body.status, 'down')
        assert.deepEqual(
          body.failing.map((f: { component: string }) => f.component),
          ['migrations'],
        )
      } finally {
        await plinth.migrator.up()
      }
      const res = await plinth.app.inject('/ready')
      assert.equal(res.statusCode, 200, res.body)
      assert.deepEqual(res.json().failing, [])
    })

    for (const caller of operators) {
      it(`shows /health details to ${caller.name}`, async () => {
        const res = await plinth.app.inject({ ...caller.request, url: '/health' })
        assert.equal(res.statusCode, 200, res.body)
        const body = res.json()
        assert.ok(['ok', 'degraded'].includes(body.status), body.status)
        assert.equal(body.version, PLINTH_VERSION)
        assert.equal(typeof body.uptimeSeconds, 'number')
        assert.ok(body.uptimeSeconds >= 0)
        assert.deepEqual(Object.keys(body.components).sort(), [
          'database',
          'eventLoop',
          'jobs',
          'memory',
          'migrations',
        ])
        for (const [name, c] of Object.entries<Record<string, unknown>>(body.components)) {
          assert.equal(typeof c.latencyMs, 'number', `${name} lacks latencyMs`)
          assert.equal(typeof c.critical, 'boolean', `${name} lacks critical`)
        }
        assert.equal(body.components.database.status, 'up')
        assert.deepEqual(body.components.migrations.details, { pending: 0 })
        assert.equal(typeof body.components.memory.details.heapUsedMb, 'number')
      })
    }

    for (const caller of outsiders) {
      it(`shows only statuses on /health to ${caller.name}`, async () => {
        const res = await plinth.app.inject({ ...caller.request, url: '/health' })
        assert.equal(res.statusCode, 200, res.body)
        const body = res.json()
        assert.deepEqual(Object.keys(body).sort(), ['components', 'status'])
        assert.ok(Object.keys(body.components).length >= 4)
        for (const [name, c] of Object.entries<Record<string, unknown>>(body.components))
          assert.deepEqual(Object.keys(c), ['status'], `${name} leaks ${Object.keys(c).join(', ')}`)
        assert.doesNotMatch(res.body, /latencyMs|details|heapUsed|pending/)
      })

      it(`refuses /api/metrics to ${caller.name} with 403 PLINTH_OPS_FORBIDDEN`, async () => {
        const res = await plinth.app.inject({ ...caller.request, url: '/api/metrics' })
        assertProblem(res, 403, 'PLINTH_OPS_FORBIDDEN')
        assert.doesNotMatch(res.body, /http_requests_total/)
      })

      it(`leaves failure reasons out of /ready for ${caller.name}`, async () => {
        const res = await plinth.app.inject({ ...caller.request, url: '/ready' })
        assert.deepEqual(res.json(), { status: 'ok', failing: [] })
      })
    }

    it('lists no redis component when REDIS_URL is unset', async () => {
      const res = await plinth.app.inject('/health')
      assert.equal(res.json().components.redis, undefined)
    })

    describe('/api/metrics for operators', () => {
      const unknownPath = `/no/such/path-${randomBytes(4).toString('hex')}`
      let scrape = ''
      before(async () => {
        assert.equal((await plinth.app.inject('/api/v1')).statusCode, 200)
        assert.equal((await plinth.app.inject(unknownPath)).statusCode, 404)
        const res = await plinth.app.inject({
          url: '/api/metrics',
          remoteAddress: OUTSIDER,
          headers: { authorization: `Bearer ${TOKEN}` },
        })
        assert.equal(res.statusCode, 200, res.body)
        assert.match(String(res.headers['content-type']), /^text\/plain/)
        scrape = res.body
      })

      it('records request duration and count by method, route template and status', () => {
        const duration = samples(scrape, 'http_request_duration_seconds_count')
        assert.ok(
          duration.some(
            (l) => /method="GET"/.test(l) && /route="\/api\/v1"/.test(l) && /status_code="200"/.test(l),
          ),
          duration.join('\n'),
        )
        assert.match(scrape, /# TYPE http_request_duration_seconds histogram/)
        assert.match(
          scrape,
          /^http_request_duration_seconds_bucket\{le="[^"]+",method="GET",route="\/api\/v1",status_code="200"\} \d+/m,
        )
        assert.match(
          scrape,
          /^http_requests_total\{method="GET",route="\/api\/v1",status_code="200"\} [1-9]/m,
        )
        assert.match(scrape, /^http_requests_in_flight \d+$/m)
      })

      it('labels a request no route matched as "unmatched", never with the raw path', () => {
        assert.match(
          scrape,
          /^http_requests_total\{method="GET",route="unmatched",status_code="404"\} [1-9]/m,
        )
        assert.ok(!scrape.includes(unknownPath), 'the raw unknown path reached a metric label')
      })

      it('exposes process, GC, pool and build metrics', () => {
        for (const family of [
          'process_cpu_seconds_total counter',
          'nodejs_gc_duration_seconds histogram',
          'plinth_db_pool_size gauge',
          'plinth_db_pool_idle gauge',
          'plinth_db_pool_waiting gauge',
          'plinth_db_pool_max gauge',
          'plinth_build_info gauge',
        ])
          assert.match(scrape, new RegExp(`^# TYPE ${family}$`, 'm'))
        const [max] = samples(scrape, 'plinth_db_pool_max')
        assert.match(max ?? '', /^plinth_db_pool_max [1-9]\d*$/)
        assert.match(scrape, new RegExp(`^plinth_build_info\\{version="${PLINTH_VERSION}",[^}]*\\} 1$`, 'm'))
      })

      it('passes promtool check metrics without a lint problem', { skip: promtoolSkip }, async () => {
        const result = await checkMetrics(scrape)
        assert.equal(result.output.trim(), '', `promtool reported:\n${result.output}`)
        assert.equal(result.code, 0)
      })
    })
  })
}
