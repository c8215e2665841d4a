import assert from 'node:assert/strict'
import { existsSync, readFileSync } from 'node:fs'
import { describe, it } from 'node:test'
import { parse } from 'yaml'
import { evaluateConditions, type Firing, fingerprintOf, Minutes } from '../src/modules/alerts/conditions.ts'
import { runbookOf } from '../src/modules/alerts/incidents.service.ts'
import {
  emptyMinute,
  foldSample,
  LATENCY_BUCKETS,
  type MinuteAgg,
  quantile,
  type Sample,
} from '../src/modules/alerts/minutes.ts'
import { detectCredentialStuffing } from '../src/modules/alerts/stuffing.ts'

// The built-in conditions on made-up minutes: each fires on what its Prometheus twin fires on and
// stays silent otherwise (the promtool tests of deploy/prometheus/rules are the reference).

const T0 = Date.UTC(2026, 0, 5, 12)
const MIN = 60_000
/** `n` answers, all in the bucket of `seconds`. */
const bucketsAt = (seconds: number, n: number) => {
  const at = LATENCY_BUCKETS.findIndex((le) => seconds <= le)
  return LATENCY_BUCKETS.map((_, i) => (i === at ? n : 0))
}

function sample(over: Partial<Sample> = {}): Sample {
  return {
    http: {},
    jobs: {},
    login: { failures: 0, sources: {} },
    backup: { createFailures: 0, verifyFailures: 0, lastSuccess: null },
    gauges: { poolWaiting: 0, loopP99: 0.01, heapRatio: 0.3, redis: 1, tlsExpiry: null },
    ...over,
  }
}

/** `count` minutes ending at `now`, each with one instance's sample from `make(i)`. */
function series(
  count: number,
  make: (i: number) => Sample,
  instance = 'i-1',
): { view: Minutes; all: MinuteAgg[] } {
  const all: MinuteAgg[] = []
  for (let i = 0; i < count; i++) {
    const m = emptyMinute(T0 + i * MIN)
    foldSample(m, instance, make(i))
    all.push(m)
  }
  return { view: new Minutes(all, T0 + (count - 1) * MIN + 30_000), all }
}
const rules = (f: Firing[]) => f.map((x) => fingerprintOf(x.rule, x.labels)).sort()
const NO_LIVE = { queueOldestSeconds: {} }
const traffic = (n: number, e5: number, seconds = 0.05) => ({
  '/api/v1/things': { n, e5, b: bucketsAt(seconds, n) },
})

describe('built-in conditions', () => {
  it('availability: 9 % 5xx burns fast (page); 0.1 % is within the SLO', () => {
    assert.ok(
      rules(evaluateConditions(series(70, () => sample({ http: traffic(600, 54) })).view, NO_LIVE)).includes(
        'availability-fast-burn{slo=availability}',
      ),
    )
    assert.deepEqual(
      rules(evaluateConditions(series(70, () => sample({ http: traffic(1000, 1) })).view, NO_LIVE)),
      ['jobs-heartbeat-stale'],
    )
  })

  it('availability: a single failure among a handful of requests does not page', () => {
    const quiet = series(70, (i) => sample({ http: traffic(1, i === 69 ? 1 : 0) }))
    assert.deepEqual(rules(evaluateConditions(quiet.view, NO_LIVE)), ['jobs-heartbeat-stale'])
  })

  it('availability: 0.5 % 5xx over hours burns slowly (ticket), without paging', () => {
    const fired = rules(
      evaluateConditions(series(180, () => sample({ http: traffic(1000, 5) })).view, NO_LIVE),
    )
    assert.ok(fired.includes('availability-slow-burn{slo=availability}'))
    assert.ok(!fired.includes('availability-fast-burn{slo=availability}'))
  })

  it('latency: 20 % of answers over 500 ms burns fast; a route above 5 % 5xx with traffic opens its own ticket', () => {
    const slow = series(70, () =>
      sample({
        http: {
          '/api/v1/things': {
            n: 600,
            e5: 36,
            b: bucketsAt(0.05, 480).map((v, i) => v + bucketsAt(1, 120)[i]!),
          },
        },
      }),
    )
    const fired = rules(evaluateConditions(slow.view, NO_LIVE))
    assert.ok(fired.includes('latency-fast-burn{slo=latency}'))
    assert.ok(fired.includes('http-error-rate{route=/api/v1/things}'))
  })

  it('p99 above 2.5 s fires; fast answers do not', () => {
    assert.ok(
      rules(
        evaluateConditions(series(20, () => sample({ http: traffic(120, 0, 4) })).view, NO_LIVE),
      ).includes('http-latency-p99'),
    )
    assert.ok(
      !rules(
        evaluateConditions(series(20, () => sample({ http: traffic(120, 0, 0.2) })).view, NO_LIVE),
      ).includes('http-latency-p99'),
    )
  })

  it('saturation fires only when held the whole window, per instance', () => {
    const held = series(16, () =>
      sample({ gauges: { poolWaiting: 2, loopP99: 0.5, heapRatio: 0.9, redis: 0, tlsExpiry: null } }),
    )
    const fired = rules(evaluateConditions(held.view, NO_LIVE))
    for (const r of ['db-pool-waiting', 'event-loop-delay', 'memory-high', 'redis-disconnected'])
      assert.ok(fired.includes(`${r}{instance=i-1}`), r)
    const blip = series(16, (i) =>
      sample({
        gauges: {
          poolWaiting: i === 12 ? 0 : 2,
          loopP99: i === 8 ? 0 : 0.5,
          heapRatio: i === 15 ? 0.5 : 0.9,
          redis: i === 14 ? 1 : 0,
          tlsExpiry: null,
        },
      }),
    )
    const none = rules(evaluateConditions(blip.view, NO_LIVE))
    for (const r of ['db-pool-waiting', 'event-loop-delay', 'memory-high', 'redis-disconnected'])
      assert.ok(!none.includes(`${r}{instance=i-1}`), r)
  })

  it('jobs: failures, dead letters, a stalled queue and a stale heartbeat', () => {
    const failing = series(15, () =>
      sample({
        jobs: {
          'plinth.webhook-delivery': { started: 4, failed: 2, dead: 0, completed: 2 },
          'plinth.mail': { started: 100, failed: 1, dead: 0, completed: 99 },
          'plinth.heartbeat': { started: 1, failed: 0, dead: 0, completed: 1 },
        },
      }),
    )
    assert.deepEqual(
      rules(evaluateConditions(failing.view, { queueOldestSeconds: { 'plinth.mail': 1200, other: 30 } })),
      ['job-failures{name=plinth.webhook-delivery}', 'job-queue-stalled{name=plinth.mail}'],
    )
    const dead = series(15, (i) =>
      sample({
        jobs: {
          x: { started: 1, failed: i === 14 ? 1 : 0, dead: i === 14 ? 1 : 0, completed: 0 },
          'plinth.heartbeat': { started: 1, failed: 0, dead: 0, completed: 1 },
        },
      }),
    )
    assert.deepEqual(rules(evaluateConditions(dead.view, NO_LIVE)), ['jobs-dead-lettered{name=x}'])
    // No heartbeat for 10 minutes: stale, but not before 10 minutes have been observed.
    assert.deepEqual(rules(evaluateConditions(series(12, () => sample()).view, NO_LIVE)), [
      'jobs-heartbeat-stale',
    ])
    assert.deepEqual(rules(evaluateConditions(series(5, () => sample()).view, NO_LIVE)), [])
  })

  it('backups: too old, failed, verification failed', () => {
    const beat = { 'plinth.heartbeat': { started: 1, failed: 0, dead: 0, completed: 1 } }
    const old = series(15, (i) =>
      sample({
        jobs: beat,
        backup: {
          createFailures: i === 3 ? 1 : 0,
          verifyFailures: i === 4 ? 1 : 0,
          lastSuccess: T0 / 1000 - 4 * 3600,
        },
      }),
    )
    assert.deepEqual(rules(evaluateConditions(old.view, NO_LIVE)), [
      'backup-failed',
      'backup-too-old',
      'backup-verification-failed',
    ])
    const fresh = series(15, () =>
      sample({ jobs: beat, backup: { createFailures: 0, verifyFailures: 0, lastSuccess: T0 / 1000 } }),
    )
    assert.deepEqual(rules(evaluateConditions(fresh.view, NO_LIVE)), [])
  })

  it('certificates: 10 days left is a ticket, 2 days a page, 30 days nothing', () => {
    const beat = { 'plinth.heartbeat': { started: 1, failed: 0, dead: 0, completed: 1 } }
    const at = (days: number) =>
      evaluateConditions(
        series(3, () =>
          sample({
            jobs: beat,
            gauges: {
              poolWaiting: 0,
              loopP99: 0,
              heapRatio: 0.1,
              redis: null,
              tlsExpiry: T0 / 1000 + days * 86400,
            },
          }),
        ).view,
        NO_LIVE,
      ).map((f) => `${f.rule}:${f.severity}`)
    assert.deepEqual(at(10), ['tls-certificate-expiring-soon:ticket'])
    assert.deepEqual(at(2), ['tls-certificate-expiry-imminent:page'])
    assert.deepEqual(at(30), [])
  })

  it('failed sign-ins: 5/s against a usual 0.1/s is a spike; a steady 2/s is not', () => {
    const beat = { 'plinth.heartbeat': { started: 1, failed: 0, dead: 0, completed: 1 } }
    const spike = series(150, (i) =>
      sample({ jobs: beat, login: { failures: i >= 140 ? 300 : 6, sources: {} } }),
    )
    assert.deepEqual(rules(evaluateConditions(spike.view, NO_LIVE)), ['login-failure-spike'])
    const steady = series(150, () => sample({ jobs: beat, login: { failures: 120, sources: {} } }))
    assert.deepEqual(rules(evaluateConditions(steady.view, NO_LIVE)), [])
  })

  it('names, for every condition, the runbook of its Prometheus twin, which exists', () => {
    const alerts = (
      parse(readFileSync('deploy/prometheus/rules/plinth-alerts.yml', 'utf8')) as {
        groups: { rules: { alert?: string }[] }[]
      }
    ).groups
      .flatMap((g) => g.rules)
      .flatMap((r) => (r.alert ? [r.alert] : []))
    for (const alert of alerts) {
      const path = runbookOf(alert)!
      assert.ok(existsSync(path), `${alert} → ${path}`)
    }
  })
})

describe('credential stuffing', () => {
  const minute = (sources: Record<string, { n: number; accounts: string[] }>) => {
    const m = emptyMinute(T0)
    m.login.failures = Object.values(sources).reduce((s, x) => s + x.n, 0)
    m.login.sources = sources
    return m
  }
  const accounts = (n: number, prefix = 'u') => Array.from({ length: n }, (_, i) => `${prefix}${i}`)

  it('fires on many failures over many accounts from few sources', () => {
    const f = detectCredentialStuffing([minute({ '198.51.100.1': { n: 40, accounts: accounts(40) } })])
    assert.equal(f?.rule, 'credential-stuffing')
    assert.equal(f?.kind, 'security')
    assert.match(f!.description, /198\.51\.100\.1 \(40 failures, 40 accounts\)/)
  })

  it('stays silent on a brute force against one account, on failures spread over many sources, and on few failures', () => {
    assert.equal(
      detectCredentialStuffing([minute({ '198.51.100.1': { n: 200, accounts: ['victim'] } })]),
      null,
    )
    const spread = Object.fromEntries(
      Array.from({ length: 50 }, (_, i) => [`198.51.100.${i}`, { n: 2, accounts: [`u${i}`, `v${i}`] }]),
    )
    assert.equal(detectCredentialStuffing([minute(spread)]), null)
    assert.equal(
      detectCredentialStuffing([minute({ '198.51.100.1': { n: 10, accounts: accounts(10) } })]),
      null,
    )
  })
})

describe('minute aggregates', () => {
  it('computes quantiles like histogram_quantile', () => {
    assert.equal(
      quantile(
        0.99,
        LATENCY_BUCKETS.map(() => 0),
      ),
      null,
    )
    const q = quantile(0.99, bucketsAt(4, 60))!
    assert.ok(q > 4.9 && q <= 5, String(q))
  })

  it('sums counters across instances and keeps the worst gauges per instance', () => {
    const m = emptyMinute(T0)
    foldSample(
      m,
      'a',
      sample({
        http: traffic(10, 1),
        gauges: { poolWaiting: 3, loopP99: 0.3, heapRatio: 0.5, redis: 1, tlsExpiry: null },
      }),
    )
    foldSample(
      m,
      'a',
      sample({
        http: traffic(5, 0),
        gauges: { poolWaiting: 0, loopP99: 0.4, heapRatio: 0.6, redis: 0, tlsExpiry: null },
      }),
    )
    foldSample(m, 'b', sample({ http: traffic(7, 2) }))
    assert.equal(m.http['/api/v1/things']!.n, 22)
    assert.equal(m.http['/api/v1/things']!.e5, 3)
    assert.deepEqual(m.instances.a, {
      poolWaiting: 0,
      loopP99: 0.3,
      heapRatio: 0.5,
      redis: 1,
      tlsExpiry: null,
    })
  })
})
