import assert from 'node:assert/strict'
import { X509Certificate } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { alertRuntimes, incidentServiceOf } from '../src/modules/alerts/alerts.module.ts'
import type { MinuteAgg, Sample } from '../src/modules/alerts/minutes.ts'
import { selfSignedCertificate } from './helpers/certificate.ts'
import { movableClock } from './helpers/clock.ts'
import { checkMetrics, skipUnlessPromtool } from './helpers/promtool.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'
import { thingsModule } from './helpers/things-module.ts'

// What one process records for the built-in alerting (its counters' deltas and its gauges, from
// its own registry), what the evaluator folds it into, and the metrics the alerts module exports.

describe('alert samples of a serving process', () => {
  let plinth: TestPlinth
  before(async () => {
    // A long interval: the test takes the samples itself.
    plinth = await startTestPlinth({
      modules: [thingsModule],
      env: { PLINTH_ALERTS_ENABLED: 'true', PLINTH_ALERTS_INTERVAL: '5m', PLINTH_ROLE: 'all' },
    })
    await plinth.listen()
  })
  after(() => plinth?.close())

  const latest = async () => {
    const row = await plinth.db.kysely
      .selectFrom('alert_samples')
      .select('data')
      .orderBy('seq', 'desc')
      .limit(1)
      .executeTakeFirstOrThrow()
    return (typeof row.data === 'string' ? JSON.parse(row.data) : row.data) as Sample
  }

  it('records requests, 5xx and latency by route since the last sample, without the probes', async () => {
    const runtime = alertRuntimes.get(plinth.context)
    assert.ok(
      runtime?.sampler && runtime.evaluator,
      'listening starts the sampler and (role all) the evaluator',
    )
    await runtime.sampler.sampleOnce()
    for (let i = 0; i < 4; i++)
      assert.equal((await plinth.app.inject({ url: '/api/v1/test/boom' })).statusCode, 500)
    for (let i = 0; i < 6; i++) assert.equal((await plinth.app.inject({ url: '/api/v1' })).statusCode, 200)
    for (let i = 0; i < 3; i++) await plinth.app.inject({ url: '/live' })
    await runtime.sampler.sampleOnce()
    const s = await latest()
    assert.deepEqual(
      { n: s.http['/api/v1/test/boom']?.n, e5: s.http['/api/v1/test/boom']?.e5 },
      { n: 4, e5: 4 },
    )
    assert.equal(s.http['/api/v1']?.n, 6)
    assert.equal(s.http['/api/v1']?.e5, 0)
    assert.equal(
      s.http['/api/v1']?.b.reduce((a, b) => a + b, 0),
      6,
      'each answer in one latency bucket',
    )
    assert.equal(s.http['/live'], undefined)
    assert.ok(s.gauges.heapRatio > 0 && s.gauges.heapRatio < 1)
    assert.equal(s.gauges.poolWaiting, 0)
    assert.equal(s.gauges.redis, null, 'no Redis configured')

    // Nothing happened since: the next sample has no requests.
    await runtime.sampler.sampleOnce()
    assert.deepEqual((await latest()).http, {})

    // The evaluator (alone here) folds the samples into the minute aggregates it stores.
    assert.equal(await runtime.evaluator.evaluateOnce(), true)
    const minutes = await plinth.db.kysely.selectFrom('alert_minutes').select('data').execute()
    const folded = minutes.map((m) => (typeof m.data === 'string' ? JSON.parse(m.data) : m.data) as MinuteAgg)
    assert.equal(
      folded.reduce((n, m) => n + (m.http['/api/v1/test/boom']?.e5 ?? 0), 0),
      4,
    )
  })

  it('exports the metrics the rules need, in a form promtool accepts', async (t) => {
    const text = await plinth.metrics.registry.metrics()
    assert.match(text, /^plinth_process_heap_limit_bytes \d+/m)
    assert.match(text, /^# TYPE plinth_login_failures_total counter/m)
    assert.doesNotMatch(text, /^plinth_tls_certificate_expiry_timestamp_seconds/m, 'absent without TLS')
    const skip = await skipUnlessPromtool()
    if (skip) return t.skip(skip)
    const r = await checkMetrics(text)
    assert.equal(r.code, 0, r.output)
  })
})

describe('incident retention', () => {
  it('deletes incidents resolved longer ago than PLINTH_ALERTS_RETENTION, and nothing active', async () => {
    const plinth = await startTestPlinth({ env: { PLINTH_ALERTS_RETENTION: '30d' } })
    try {
      const incidents = incidentServiceOf(plinth.context)
      const firing = (name: string) => ({
        rule: 'retention-test',
        kind: 'alert' as const,
        severity: 'ticket' as const,
        summary: name,
        description: name,
        labels: { name },
        value: 1,
      })
      for (const name of ['old', 'recent', 'active']) assert.equal(await incidents.open(firing(name)), true)
      const ids = Object.fromEntries(
        (await plinth.db.kysely.selectFrom('incidents').select(['id', 'summary']).execute()).map((r) => [
          r.summary,
          r.id,
        ]),
      )
      await incidents.resolve(ids.old!)
      await incidents.resolve(ids.recent!)
      const day = 86_400_000
      await plinth.db.kysely
        .updateTable('incidents')
        .set({ resolved_at: new Date(Date.now() - 31 * day) })
        .where('id', '=', ids.old!)
        .execute()
      const report = await plinth.retention.run()
      assert.equal(report.results.find((r) => r.rule === 'alerts.incidents')?.deleted, 1)
      const left = (await plinth.db.kysely.selectFrom('incidents').select('summary').execute()).map(
        (r) => r.summary,
      )
      assert.deepEqual(left.sort(), ['active', 'recent'])
      const events = await plinth.db.kysely.selectFrom('incident_events').select('incident_id').execute()
      assert.ok(
        events.every((e) => e.incident_id !== ids.old),
        'its timeline went with it',
      )
    } finally {
      await plinth.close()
    }
  })
})

describe('incident escalation', () => {
  it('escalates each unacknowledged incident once, after PLINTH_ALERTS_ESCALATE_AFTER, and never an acknowledged one', async () => {
    const clock = movableClock()
    const plinth = await startTestPlinth({ env: { PLINTH_ALERTS_ESCALATE_AFTER: '10m' }, now: clock.now })
    try {
      const incidents = incidentServiceOf(plinth.context)
      const firing = (name: string) => ({
        rule: 'escalation-test',
        kind: 'alert' as const,
        severity: 'page' as const,
        summary: name,
        description: name,
        labels: { name },
        value: 1,
      })
      await incidents.open(firing('ignored'))
      await incidents.open(firing('handled'))
      const id = (summary: string) =>
        plinth.db.kysely
          .selectFrom('incidents')
          .select('id')
          .where('summary', '=', summary)
          .executeTakeFirstOrThrow()
      await incidents.acknowledge((await id('handled')).id, { actor: { type: 'system', id: 'test' } })
      clock.advance(9 * 60_000)
      assert.equal(await incidents.escalateDue(), 0, 'not yet')
      clock.advance(2 * 60_000)
      assert.equal(await incidents.escalateDue(), 1)
      assert.equal(await incidents.escalateDue(), 0, 'once')
      const shown = await incidents.show((await id('ignored')).id)
      assert.deepEqual(
        shown.timeline.map((t) => t.kind),
        ['opened', 'escalated'],
      )
      assert.equal((await incidents.show((await id('handled')).id)).incident.escalatedAt, null)
    } finally {
      await plinth.close()
    }
  })
})

describe('certificate expiry metric', () => {
  const dir = mkdtempSync(join(tmpdir(), 'plinth-alert-tls-'))
  after(() => rmSync(dir, { recursive: true, force: true }))

  it('exports when PLINTH_TLS_CERT_FILE expires', async () => {
    const { cert, key } = selfSignedCertificate(dir, { commonName: 'localhost', days: 10 })
    const plinth = await startTestPlinth({
      env: { PLINTH_TLS_CERT_FILE: cert, PLINTH_TLS_KEY_FILE: key },
      prepare: false,
    })
    try {
      const expected = Math.floor(Date.parse(new X509Certificate(readFileSync(cert)).validTo) / 1000)
      const text = await plinth.metrics.registry.metrics()
      assert.match(
        text,
        new RegExp(
          `^plinth_tls_certificate_expiry_timestamp_seconds\\{certificate="server"\\} ${expected}$`,
          'm',
        ),
      )
    } finally {
      await plinth.close()
    }
  })
})
