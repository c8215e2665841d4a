import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import {
  type CheckResult,
  cachedCheck,
  createHealth,
  eventLoopCheck,
  type HealthCheck,
  memoryCheck,
} from './health.ts'

/** A check whose answers the test hands out one by one, counting how often it was run. */
function manualCheck(name: string, critical: boolean) {
  const pending: ((r: CheckResult) => void)[] = []
  let runs = 0
  const check: HealthCheck = {
    name,
    critical,
    check: () => {
      runs++
      return new Promise<CheckResult>((resolve) => pending.push(resolve))
    },
  }
  return {
    check,
    runs: () => runs,
    answer(result: CheckResult) {
      const next = pending.shift()
      assert.ok(next, `no ${name} check is waiting for an answer`)
      next(result)
    },
  }
}

const fixed = (name: string, critical: boolean, result: CheckResult | Error): HealthCheck => ({
  name,
  critical,
  check: async () => {
    if (result instanceof Error) throw result
    return result
  },
})

describe('health report', () => {
  it('is ok when every component is up, degraded when a non-critical one is not, down when a critical one is down', async () => {
    const up = createHealth({ timeoutMs: 1000, checks: [fixed('db', true, { status: 'up' })] })
    assert.equal((await up.report()).status, 'ok')

    const degraded = createHealth({
      timeoutMs: 1000,
      checks: [fixed('db', true, { status: 'up' }), fixed('redis', false, new Error('connection refused'))],
    })
    const report = await degraded.report()
    assert.equal(report.status, 'degraded')
    assert.equal(report.components.redis?.status, 'down')
    assert.equal(report.components.redis?.error, 'connection refused')
    assert.equal(report.components.redis?.critical, false)
    // Readiness looks at the critical components only.
    assert.equal((await degraded.readiness()).status, 'ok')
    assert.deepEqual(Object.keys((await degraded.readiness()).components), ['db'])

    const down = createHealth({ timeoutMs: 1000, checks: [fixed('db', true, new Error('too many clients'))] })
    assert.equal((await down.report()).status, 'down')
    assert.equal((await down.readiness()).status, 'down')
  })

  it('reports a check that does not answer within the timeout as down, with the reason', async () => {
    const hanging = manualCheck('db', true)
    const health = createHealth({ timeoutMs: 20, checks: [hanging.check] })
    const report = await health.report()
    assert.equal(report.status, 'down')
    assert.equal(report.components.db?.status, 'down')
    assert.equal(report.components.db?.error, 'no answer within 20 ms')
    hanging.answer({ status: 'up' })
  })

  it('keeps the details a check returns and measures its latency', async () => {
    const health = createHealth({ timeoutMs: 1000 })
    health.add(fixed('queue', false, { status: 'degraded', details: { backlog: 12 } }))
    const report = await health.report()
    assert.equal(report.status, 'degraded')
    assert.deepEqual(report.components.queue?.details, { backlog: 12 })
    assert.equal(typeof report.components.queue?.latencyMs, 'number')
  })

  it('refuses a second check under a name already registered', () => {
    const health = createHealth({ timeoutMs: 1000, checks: [fixed('db', true, { status: 'up' })] })
    assert.throws(
      () => health.add(fixed('db', false, { status: 'up' })),
      /health check "db" is already registered/,
    )
  })

  it('runs a check once for concurrent probes', async () => {
    const db = manualCheck('db', true)
    const health = createHealth({ timeoutMs: 1000, checks: [db.check] })
    const probes = [health.report(), health.readiness(), health.report()]
    db.answer({ status: 'up' })
    const reports = await Promise.all(probes)
    assert.equal(db.runs(), 1)
    assert.deepEqual(
      reports.map((r) => r.status),
      ['ok', 'ok', 'ok'],
    )
    // Nothing is kept after the run (ttl 0): the next probe runs the check again.
    const next = health.report()
    db.answer({ status: 'degraded' })
    assert.equal((await next).status, 'degraded')
    assert.equal(db.runs(), 2)
  })
})

describe('cachedCheck', () => {
  it('reuses a result for the ttl, and runs again after invalidate()', async () => {
    const inner = manualCheck('db', true)
    const cached = cachedCheck(inner.check, { ttlMs: 60_000 })
    assert.equal(cached.name, 'db')
    assert.equal(cached.critical, true)
    const first = cached.check()
    inner.answer({ status: 'up', details: { n: 1 } })
    assert.deepEqual(await first, { status: 'up', details: { n: 1 } })
    assert.deepEqual(await cached.check(), { status: 'up', details: { n: 1 } })
    assert.equal(inner.runs(), 1)

    cached.invalidate()
    const second = cached.check()
    inner.answer({ status: 'up', details: { n: 2 } })
    assert.deepEqual(await second, { status: 'up', details: { n: 2 } })
    assert.equal(inner.runs(), 2)
  })

  it('does not keep a result `keep` refuses (a failure is re-checked on the next call)', async () => {
    const inner = manualCheck('db', true)
    const cached = cachedCheck(inner.check, { ttlMs: 60_000, keep: (r) => r.status === 'up' })
    const failed = cached.check()
    inner.answer({ status: 'down' })
    assert.equal((await failed).status, 'down')
    const again = cached.check()
    assert.equal(inner.runs(), 2, 'a refused result is not reused')
    inner.answer({ status: 'up' })
    assert.equal((await again).status, 'up')
    assert.equal((await cached.check()).status, 'up')
    assert.equal(inner.runs(), 2, 'an accepted one is')
  })

  it('neither caches nor shares a run that started before invalidate()', async () => {
    const inner = manualCheck('db', true)
    const cached = cachedCheck(inner.check, { ttlMs: 60_000 })
    const stale = cached.check()
    cached.invalidate()
    const fresh = cached.check()
    assert.equal(inner.runs(), 2, 'the call after invalidate() does not join the older run')
    inner.answer({ status: 'down' })
    inner.answer({ status: 'up' })
    assert.equal((await stale).status, 'down')
    assert.equal((await fresh).status, 'up')
    // The fresh run's result is kept; the stale one never was.
    assert.equal((await cached.check()).status, 'up')
    assert.equal(inner.runs(), 2)
  })
})

describe('runtime checks', () => {
  it('event loop: up below the threshold, degraded above it, with p99 and max in milliseconds', async () => {
    const relaxed = eventLoopCheck(60_000)
    const strict = eventLoopCheck(-1)
    try {
      // Keep the loop busy for a moment so the histogram has samples.
      const until = Date.now() + 30
      while (Date.now() < until) {
        // busy
      }
      await new Promise((resolve) => setImmediate(resolve))
      const ok = await relaxed.check()
      assert.equal(ok.status, 'up')
      assert.equal(typeof ok.details?.p99Ms, 'number')
      assert.equal(typeof ok.details?.maxMs, 'number')
      assert.equal((await strict.check()).status, 'degraded')
      assert.equal(relaxed.name, 'eventLoop')
      assert.equal(relaxed.critical, false)
    } finally {
      relaxed.stop()
      strict.stop()
    }
  })

  it('memory: degraded above the ratio of the heap limit, with the figures in MB', async () => {
    const up = await memoryCheck(1).check()
    assert.equal(up.status, 'up')
    const details = up.details as Record<string, number>
    assert.ok(details.heapLimitMb! > 0)
    assert.ok(details.heapUsedRatio! > 0 && details.heapUsedRatio! < 1)
    assert.equal((await memoryCheck(0).check()).status, 'degraded')
  })
})
