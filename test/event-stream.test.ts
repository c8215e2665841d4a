import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { after, before, describe, it } from 'node:test'
import { bearer, createUser, NO_RATE_LIMITS, type Session, uniqueEmail } from './helpers/accounts.ts'
import { captureLogs } from './helpers/log-capture.ts'
import { useRedisKit } from './helpers/redis-kit.ts'
import { skipUnlessPostgres, skipUnlessRedis, TEST_REDIS_URL } from './helpers/services.ts'
import { openStream, type SseStream } from './helpers/sse.ts'
import { startTcpProxy, type TcpProxy } from './helpers/tcp-proxy.ts'
import { testConfig } from './helpers/test-config.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'
import { holdsFor, waitFor } from './helpers/wait-for.ts'

// The event stream (GET /api/v1/events/stream) in one process, over real HTTP: node's fetch reads
// the answer as it arrives (inject would wait for an end that never comes).

const ENV = {
  ...NO_RATE_LIMITS,
  PLINTH_EVENTS_STREAM_HEARTBEAT: '1s',
  PLINTH_EVENTS_STREAM_RETRY: '2500ms',
  PLINTH_EVENTS_STREAM_MAX: '3',
}

function assertProblemAnswer(s: SseStream, status: number, code: string): void {
  assert.equal(s.status, status, JSON.stringify(s.body))
  assert.match(s.headers.get('content-type') ?? '', /^application\/problem\+json/)
  assert.equal((s.body as { code?: string }).code, code)
}

const skipPostgres = await skipUnlessPostgres()

for (const backend of ['embedded', 'postgres'] as const)
  describe(`event stream, one process (${backend})`, { skip: backend === 'postgres' && skipPostgres }, () => {
    let plinth: TestPlinth
    let base = ''
    let admin: Session
    const streams: SseStream[] = []
    const open = async (headers: Record<string, string>, query = '') => {
      const s = await openStream(`${base}/api/v1/events/stream${query}`, headers)
      streams.push(s)
      return s
    }
    const emit = async (who: Session, type: string, data: unknown) => {
      const res = await fetch(`${base}/api/v1/events`, {
        method: 'POST',
        headers: { ...bearer(who.token), 'content-type': 'application/json' },
        body: JSON.stringify({ type, data }),
      })
      assert.equal(res.status, 202, await res.clone().text())
      return ((await res.json()) as { id: string }).id
    }
    /** Closes every stream a test opened, and waits until the server counts them gone. */
    const closeAll = async () => {
      for (const s of streams.splice(0)) s.close()
      await waitFor('no open stream', async () => {
        const res = await plinth.app.inject({ url: '/api/metrics', headers: bearer(admin.token) })
        return /^plinth_event_streams_open 0$/m.test(res.body)
      })
    }

    before(async () => {
      plinth = await startTestPlinth({ backend, env: ENV })
      const address = await plinth.app.listen({ port: 0, host: '127.0.0.1' })
      base = address
      admin = await createUser(plinth, uniqueEmail('stream-admin'), 'admin')
    })
    after(async () => {
      for (const s of streams) s.close()
      await plinth?.close()
    })

    it('refuses without a credential (401) and without events:read (403), as problem+json before any stream', async () => {
      assertProblemAnswer(await open({}), 401, 'PLINTH_AUTH_REQUIRED')
      const member = await createUser(plinth, uniqueEmail('stream-member'), 'member')
      assertProblemAnswer(await open(bearer(member.token)), 403, 'PLINTH_AUTH_FORBIDDEN')
      // An administrator's API token holds it only when its scopes name it.
      const token = async (scopes: string[]) => {
        const res = await plinth.app.inject({
          method: 'POST',
          url: '/api/v1/me/tokens',
          headers: bearer(admin.token),
          payload: { name: `stream ${scopes.join(' ')}`, scopes },
        })
        assert.equal(res.statusCode, 201, res.body)
        return (res.json() as { token: string }).token
      }
      assertProblemAnswer(await open(bearer(await token(['self:read']))), 403, 'PLINTH_AUTH_FORBIDDEN')
      const scoped = await open(bearer(await token(['events:read'])))
      assert.equal(scoped.status, 200)
      assert.match(scoped.headers.get('content-type') ?? '', /^text\/event-stream/)
      assert.equal(scoped.headers.get('cache-control'), 'no-store, no-transform')
      assertProblemAnswer(
        await open(bearer(admin.token), '?types=Not%20A%20Pattern'),
        422,
        'PLINTH_HTTP_VALIDATION_FAILED',
      )
      await closeAll()
    })

    it('sends each event as id/event/data after a retry hint, filtered by types patterns', async () => {
      const all = await open(bearer(admin.token))
      const invoices = await open(bearer(admin.token), '?types=invoice.*,user:created')
      await waitFor('the retry hint', () => all.retry() === 2500 && invoices.retry() === 2500)
      const member = await createUser(plinth, uniqueEmail('stream-emitter'), 'member')
      const orderId = await emit(member, 'order.created', { n: 1 })
      const paidId = await emit(member, 'invoice.paid', { amount: 12 })
      const userId = await emit(member, 'user:created', { who: 'x' })
      const got = await all.waitForMessages(3)
      assert.deepEqual(
        got.map((m) => [m.id, m.event]),
        [
          [orderId, 'order.created'],
          [paidId, 'invoice.paid'],
          [userId, 'user:created'],
        ],
      )
      const data = JSON.parse(got[1]!.data!) as Record<string, unknown>
      assert.deepEqual(Object.keys(data).sort(), ['data', 'id', 'occurredAt', 'type'])
      assert.deepEqual(data.data, { amount: 12 })
      assert.equal(data.id, paidId)
      assert.ok(!Number.isNaN(Date.parse(String(data.occurredAt))))
      const filtered = await invoices.waitForMessages(2)
      assert.deepEqual(
        filtered.map((m) => m.id),
        [paidId, userId],
      )
      // The order event was not held back, only filtered: nothing more arrives.
      await holdsFor('no third message', () => invoices.messages.length === 2, { forMs: 300 })
      await closeAll()
    })

    it('resumes after Last-Event-ID with what was missed, and says so when the id is no longer kept', async () => {
      const first = await open(bearer(admin.token))
      const ids = []
      for (let i = 0; i < 3; i++) ids.push(await emit(admin, 'resume.test', { i }))
      await first.waitForMessages(3, 'resume.test')
      first.close()
      const resumed = await open({ ...bearer(admin.token), 'last-event-id': ids[0]! })
      const replayed = await resumed.waitForMessages(2, 'resume.test')
      assert.deepEqual(
        replayed.map((m) => m.id),
        ids.slice(1),
      )
      const later = await emit(admin, 'resume.test', { i: 3 })
      assert.equal((await resumed.waitForMessages(3, 'resume.test'))[2]!.id, later)
      // Exactly once: nothing replayed twice.
      assert.equal(new Set(resumed.messages.map((m) => m.id)).size, resumed.messages.length)

      const lost = await open({ ...bearer(admin.token), 'last-event-id': randomUUID() })
      const [gap] = await lost.waitForMessages(1, 'stream.gap')
      assert.equal(gap!.id, undefined)
      await closeAll()
    })

    it('sends a heartbeat comment every PLINTH_EVENTS_STREAM_HEARTBEAT', async () => {
      const s = await open(bearer(admin.token))
      await waitFor('two heartbeats', () => s.comments.filter((c) => c === 'heartbeat').length >= 2, {
        timeoutMs: 10_000,
      })
      await closeAll()
    })

    it('is no request in flight once open, and is recorded once, when its headers went (not at its end)', async () => {
      const scrape = async () =>
        (await plinth.app.inject({ url: '/api/metrics', headers: bearer(admin.token) })).body
      const recorded = (body: string) =>
        Number(
          /^http_request_duration_seconds_count\{method="GET",route="\/api\/v1\/events\/stream",status_code="200"\} (\d+)$/m.exec(
            body,
          )?.[1] ?? 0,
        )
      const before = recorded(await scrape())
      const s = await open(bearer(admin.token))
      await waitFor('the stream open', () => s.retry() !== undefined)
      const during = await scrape()
      // The scrape itself is the one request in flight: the open stream is not counted.
      assert.match(during, /^http_requests_in_flight 1$/m)
      assert.equal(recorded(during), before + 1, 'the stream was not recorded when its headers went')
      await closeAll()
      const afterwards = await scrape()
      assert.equal(recorded(afterwards), before + 1, 'the stream was recorded again at its end')
      assert.match(afterwards, /^http_requests_in_flight 1$/m)
    })

    it('ends the stream when its session is revoked', async () => {
      const other = await createUser(plinth, uniqueEmail('stream-revoked'), 'admin')
      const s = await open(bearer(other.token))
      await waitFor('the stream open', () => s.retry() !== undefined)
      const res = await plinth.app.inject({
        method: 'POST',
        url: '/api/v1/auth/logout',
        headers: bearer(other.token),
      })
      assert.ok(res.statusCode < 300, res.body)
      await waitFor('the stream ended', () => s.isEnded(), { timeoutMs: 10_000 })
      await closeAll()
    })

    it('holds at most PLINTH_EVENTS_STREAM_MAX streams: one more gets 503 PLINTH_EVENTS_STREAM_FULL with Retry-After', async () => {
      const held = [
        await open(bearer(admin.token)),
        await open(bearer(admin.token)),
        await open(bearer(admin.token)),
      ]
      for (const s of held) assert.equal(s.status, 200)
      const refused = await open(bearer(admin.token))
      assertProblemAnswer(refused, 503, 'PLINTH_EVENTS_STREAM_FULL')
      assert.ok(Number(refused.headers.get('retry-after')) > 0)
      held[0]!.close()
      await waitFor('a free place', async () => {
        const s = await open(bearer(admin.token))
        return s.status === 200
      })
      const metrics = await plinth.app.inject({ url: '/api/metrics', headers: bearer(admin.token) })
      assert.match(metrics.body, /^plinth_event_stream_refused_total [1-9]/m)
      await closeAll()
    })

    it('streams an event emitted in a transaction once it commits, never one whose transaction rolled back', async () => {
      const s = await open(bearer(admin.token))
      await waitFor('the stream open', () => s.retry() !== undefined)
      const events = plinth.context.events
      const rolledBack = randomUUID()
      await assert.rejects(
        plinth.db.kysely.transaction().execute(async (trx) => {
          await events.emit('trx.test', { outcome: 'rolled back' }, { id: rolledBack, db: trx })
          throw new Error('roll back')
        }),
        /roll back/,
      )
      const committed = randomUUID()
      await plinth.db.kysely.transaction().execute(async (trx) => {
        await events.emit('trx.test', { outcome: 'committed' }, { id: committed, db: trx })
      })
      const marker = (await events.emit('trx.marker', null)).id
      await s.waitForMessages(1, 'trx.marker')
      await s.waitForMessages(1, 'trx.test')
      // The marker was published after both transactions ended: a rolled-back event would be there by now.
      await holdsFor('no rolled-back event', () => !s.messages.some((m) => m.id === rolledBack), {
        forMs: 500,
      })
      assert.deepEqual(
        s.messages.filter((m) => m.event === 'trx.test').map((m) => m.id),
        [committed],
      )
      assert.ok(marker)
      await closeAll()
    })
  })

describe('event stream at shutdown', () => {
  it('ends open streams when the server shuts down, without holding the shutdown', async () => {
    const config = testConfig({ ...ENV, PLINTH_SHUTDOWN_TIMEOUT: '60s' })
    const logs = captureLogs(config)
    const plinth = await startTestPlinth({ config, logger: logs.logger })
    try {
      const base = await plinth.app.listen({ port: 0, host: '127.0.0.1' })
      const admin = await createUser(plinth, uniqueEmail('stream-shutdown'), 'admin')
      const s = await openStream(`${base}/api/v1/events/stream`, bearer(admin.token))
      assert.equal(s.status, 200)
      await waitFor('the stream open', () => s.retry() !== undefined)
      await plinth.shutdown()
      await s.ended
      assert.ok(s.isEnded())
      const messages = logs.lines().map((l) => l.msg)
      assert.ok(messages.includes('shutdown complete'))
      // Ended by the drain, not cut by the timeout.
      assert.ok(!messages.includes('shutdown timeout reached, closing open connections'))
    } finally {
      await plinth.close()
    }
  })
})

describe('event stream max age', () => {
  it('ends a stream after PLINTH_EVENTS_STREAM_MAX_AGE; the client reconnects with Last-Event-ID and misses nothing', async () => {
    const plinth = await startTestPlinth({ env: { ...ENV, PLINTH_EVENTS_STREAM_MAX_AGE: '1500ms' } })
    const streams: SseStream[] = []
    try {
      const base = await plinth.app.listen({ port: 0, host: '127.0.0.1' })
      const admin = await createUser(plinth, uniqueEmail('stream-max-age'), 'admin')
      const first = await openStream(`${base}/api/v1/events/stream`, bearer(admin.token))
      streams.push(first)
      assert.equal(first.status, 200)
      await waitFor('the stream open', () => first.retry() !== undefined)
      const seen = (await plinth.context.events.emit('age.test', { n: 1 })).id
      await first.ended
      assert.ok(first.isEnded(), 'the server ended the stream by itself')
      const missed = (await plinth.context.events.emit('age.test', { n: 2 })).id
      const next = await openStream(`${base}/api/v1/events/stream`, {
        ...bearer(admin.token),
        'last-event-id': seen,
      })
      streams.push(next)
      await waitFor('the missed event replayed', () => next.messages.some((m) => m.id === missed))
      assert.ok(
        first.messages.some((m) => m.id === seen),
        'the first stream had the first event',
      )
      assert.ok(!next.messages.some((m) => m.id === seen), 'nothing seen before is sent again')
    } finally {
      for (const s of streams) s.close()
      await plinth.close()
    }
  })
})

const skipRedis = skipPostgres || (await skipUnlessRedis())

describe('event stream through Redis (two processes’ worth of Plinth)', { skip: skipRedis }, () => {
  const kit = useRedisKit()
  const prefix = `event-stream-${process.pid}-${randomUUID().slice(0, 8)}:`
  const redisAddress = new URL(TEST_REDIS_URL)
  let proxy: TcpProxy
  let a: TestPlinth
  let b: TestPlinth
  let aBase = ''
  let aAdmin: Session
  const streams: SseStream[] = []

  before(async () => {
    proxy = await startTcpProxy({ host: redisAddress.hostname, port: Number(redisAddress.port || 6379) })
    // A reaches Redis through a proxy the test can cut; B directly. One namespace, as one deployment.
    const shared = { ...ENV, PLINTH_REDIS_PREFIX: prefix }
    ;[a, b] = await Promise.all([
      startTestPlinth({ backend: 'postgres', env: { ...shared, REDIS_URL: proxy.through(TEST_REDIS_URL) } }),
      startTestPlinth({ backend: 'postgres', env: { ...shared, REDIS_URL: TEST_REDIS_URL } }),
    ])
    aBase = await a.app.listen({ port: 0, host: '127.0.0.1' })
    aAdmin = await createUser(a, uniqueEmail('redis-stream'), 'admin')
  })
  after(async () => {
    for (const s of streams) s.close()
    await Promise.all([a?.close(), b?.close()])
    await proxy?.close()
  })

  const openOnA = async (query = '') => {
    const s = await openStream(`${aBase}/api/v1/events/stream${query}`, bearer(aAdmin.token))
    assert.equal(s.status, 200)
    streams.push(s)
    await waitFor('the stream open', () => s.retry() !== undefined)
    return s
  }

  it('a stream on one process gets the events emitted on another, exactly once, from the shared Redis stream', async () => {
    kit.dropKeysAfter(prefix)
    const s = await openOnA('?types=fanout.*')
    const fromB = (await b.context.events.emit('fanout.b', { from: 'b' })).id
    const fromA = (await a.context.events.emit('fanout.a', { from: 'a' })).id
    const got = await s.waitForMessages(2)
    assert.deepEqual(new Set(got.map((m) => m.id)), new Set([fromA, fromB]))
    await holdsFor('no duplicate', () => s.messages.length === 2, { forMs: 500 })
    // The entries are in Redis, under the deployment's prefix, capped near PLINTH_EVENTS_STREAM_HISTORY.
    const entries = await kit.raw.xrange(`${prefix}events:stream`, '-', '+')
    assert.ok(entries.some(([, fields]) => fields[1]?.includes(fromB)))
  })

  it('with Redis away, a process streams its own events; back, it catches up on what others emitted meanwhile', async () => {
    kit.dropKeysAfter(prefix)
    const s = await openOnA('?types=outage.*')
    proxy.cut()
    const readsRedis = async () => {
      const res = await a.app.inject({ url: '/api/metrics', headers: bearer(aAdmin.token) })
      return /^plinth_event_stream_redis_connected 1$/m.test(res.body)
    }
    await waitFor(
      'A sees redis gone',
      async () => a.redis!.client.status !== 'ready' && !(await readsRedis()),
      {
        timeoutMs: 15_000,
      },
    )
    const own = (await a.context.events.emit('outage.a', null)).id
    const [first] = await s.waitForMessages(1)
    assert.equal(first!.id, own)
    const meanwhile = (await b.context.events.emit('outage.b', null)).id
    proxy.restore()
    await waitFor('A reads redis again', readsRedis, { timeoutMs: 30_000 })
    const after = (await b.context.events.emit('outage.b', null)).id
    const got = await s.waitForMessages(3, undefined, 30_000)
    assert.deepEqual(
      got.map((m) => m.id),
      [own, meanwhile, after],
    )
    const metrics = await a.app.inject({ url: '/api/metrics', headers: bearer(aAdmin.token) })
    assert.match(metrics.body, /^plinth_event_stream_local_fallbacks_total [1-9]/m)
  })
})
