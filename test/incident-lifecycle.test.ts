import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { alertRuntimes, incidentServiceOf } from '../src/modules/alerts/alerts.module.ts'
import { bearer, createUser, NO_RATE_LIMITS, type Session, uniqueEmail } from './helpers/accounts.ts'
import { assertProblem } from './helpers/assert-problem.ts'
import { movableClock } from './helpers/clock.ts'
import { skipUnlessPostgres } from './helpers/services.ts'
import { testConfig } from './helpers/test-config.ts'
import { createTestDatabase, type TestDatabase } from './helpers/test-database.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'
import { holdsFor, waitFor } from './helpers/wait-for.ts'
import { type Receiver, startReceiver } from './helpers/webhook-receiver.ts'

// Built-in alerting across replicas: two Plinth instances (both `all`: HTTP, workers, sampler and
// a candidate evaluator) on one PostgreSQL database, with real sign-in failures, real ticks, the real
// notification job, e-mail captured in mail_outbox and signed webhooks to a local receiver.

const ESCALATE_AFTER_MS = 60_000

describe('built-in alerting on two instances of one database', { skip: await skipUnlessPostgres() }, () => {
  let db: TestDatabase
  let a: TestPlinth
  let b: TestPlinth
  let receiver: Receiver
  let admin: Session
  let member: Session
  const clock = movableClock()

  const env = (url: string) =>
    testConfig({
      ...NO_RATE_LIMITS,
      DATABASE_URL: url,
      PLINTH_ALERTS_ENABLED: 'true',
      PLINTH_ALERTS_INTERVAL: '1s',
      PLINTH_ALERTS_EMAIL: 'ops@example.com',
      PLINTH_ALERTS_ESCALATION_EMAIL: 'oncall@example.com',
      PLINTH_ALERTS_ESCALATE_AFTER: `${ESCALATE_AFTER_MS / 1000}s`,
      PLINTH_WEBHOOKS_ALLOW_PRIVATE: 'true',
      PLINTH_WEBHOOKS_ALLOW_HTTP: 'true',
      PLINTH_JOBS_POLL_INTERVAL: '500ms',
    })

  before(async () => {
    db = await createTestDatabase()
    receiver = await startReceiver()
    a = await startTestPlinth({ config: env(db.url), now: clock.now })
    b = await startTestPlinth({ config: env(db.url), now: clock.now })
    await a.listen()
    await b.listen()
    admin = await createUser(a, uniqueEmail('admin'), 'admin')
    member = await createUser(a, uniqueEmail('member'), 'member')
    const hook = await a.app.inject({
      method: 'POST',
      url: '/api/v1/webhooks',
      headers: bearer(admin.token),
      payload: { url: receiver.url('/incidents'), eventTypes: ['incident.*'] },
    })
    assert.equal(hook.statusCode, 201, hook.body)
  })

  after(async () => {
    await a?.close()
    await b?.close()
    await receiver?.close()
    await db?.drop()
  })

  const evaluators = () => [a, b].map((p) => alertRuntimes.get(p.context)?.evaluator)
  const leaders = () => evaluators().filter((e) => e?.isLeader).length
  const mails = async (category: string, to?: string) => {
    let q = a.db.kysely
      .selectFrom('mail_outbox')
      .select(['to_address', 'subject'])
      .where('category', '=', category)
    if (to) q = q.where('to_address', '=', to)
    return q.execute()
  }
  const deliveries = (type: string, incidentId: string) =>
    receiver.of('/incidents').filter((r) => {
      const body = JSON.parse(r.raw.toString()) as { type: string; data: { incident: { id: string } } }
      return body.type === type && body.data.incident.id === incidentId
    })
  const incidentsOf = async (rule: string) =>
    (await b.app.inject({ url: '/api/v1/admin/incidents', headers: bearer(admin.token) }))
      .json()
      .incidents.filter((i: { rule: string }) => i.rule === rule)

  it('elects exactly one evaluator', async () => {
    await waitFor('an evaluator', () => leaders() === 1, { timeoutMs: 15_000 })
    await holdsFor('exactly one evaluator', () => leaders() === 1, { forMs: 3000, intervalMs: 200 })
  })

  let stuffingId = ''
  it('opens one security incident for credential stuffing seen by both instances, and notifies it once', async () => {
    // 40 unknown addresses from two sources, half through each instance.
    for (let i = 0; i < 40; i++) {
      const res = await (i % 2 ? a.app : b.app).inject({
        method: 'POST',
        url: '/api/v1/auth/login',
        payload: { email: uniqueEmail('victim'), password: 'not-the-password-1' },
        remoteAddress: i % 4 < 2 ? '203.0.113.7' : '203.0.113.8',
      })
      assert.equal(res.statusCode, 401, res.body)
    }
    const [incident] = await waitFor(
      'the credential-stuffing incident',
      async () => {
        const found = await incidentsOf('credential-stuffing')
        return found.length ? found : undefined
      },
      { timeoutMs: 20_000, intervalMs: 200 },
    )
    stuffingId = incident.id
    assert.equal(incident.kind, 'security')
    assert.equal(incident.severity, 'page')
    assert.equal(incident.status, 'open')
    assert.equal(incident.runbook, 'docs/operations/alerts/plinth-login-failure-spike.md')
    // Opened as soon as the pattern held (30 failures over 20 accounts at least), sources named.
    const [, failures, accounts] =
      /^(\d+) failed sign-ins over (\d+) accounts/.exec(incident.description) ?? []
    assert.ok(Number(failures) >= 30 && Number(accounts) >= 20, incident.description)
    assert.match(incident.description, /203\.0\.113\.7/)
    assert.match(incident.description, /203\.0\.113\.8/)

    await waitFor(
      'the opened e-mail',
      async () => (await mails('incident-opened', 'ops@example.com')).length > 0,
      {
        timeoutMs: 20_000,
      },
    )
    await waitFor('the incident.opened webhook', () => deliveries('incident.opened', stuffingId).length > 0, {
      timeoutMs: 20_000,
    })
    // Both instances keep evaluating (one of them as the evaluator): nothing is opened or sent twice.
    await holdsFor(
      'one incident, one e-mail, one webhook',
      async () =>
        (await incidentsOf('credential-stuffing')).length === 1 &&
        (await mails('incident-opened', 'ops@example.com')).length === 1 &&
        deliveries('incident.opened', stuffingId).length === 1,
      { forMs: 4000, intervalMs: 250 },
    )
    const body = JSON.parse(deliveries('incident.opened', stuffingId)[0]!.raw.toString())
    // The Slack-compatible message rides along as data.text / data.blocks (and data.chat).
    assert.match(body.data.text, /^:rotating_light: \[page\] Incident opened: Credential stuffing/)
    assert.equal(body.data.blocks[0].type, 'section')
    assert.deepEqual(body.data.chat.text, body.data.text)
  })

  it('escalates an unacknowledged incident once, to the second channel', async () => {
    clock.advance(ESCALATE_AFTER_MS + 1000)
    await waitFor(
      'the escalation e-mail',
      async () => (await mails('incident-escalated', 'oncall@example.com')).length > 0,
      {
        timeoutMs: 20_000,
      },
    )
    await waitFor(
      'the incident.escalated webhook',
      () => deliveries('incident.escalated', stuffingId).length > 0,
      {
        timeoutMs: 20_000,
      },
    )
    await holdsFor(
      'one escalation',
      async () =>
        (await mails('incident-escalated', 'oncall@example.com')).length === 1 &&
        (await mails('incident-escalated', 'ops@example.com')).length === 0 &&
        deliveries('incident.escalated', stuffingId).length === 1,
      { forMs: 3000, intervalMs: 250 },
    )
    const shown = await b.app.inject({
      url: `/api/v1/admin/incidents/${stuffingId}`,
      headers: bearer(admin.token),
    })
    assert.equal(shown.statusCode, 200)
    assert.deepEqual(
      shown.json().timeline.map((t: { kind: string }) => t.kind),
      ['opened', 'escalated'],
    )
  })

  it('lets an operator acknowledge (idempotent); members may not', async () => {
    const refused = await a.app.inject({
      method: 'POST',
      url: `/api/v1/admin/incidents/${stuffingId}/acknowledge`,
      headers: bearer(member.token),
    })
    assertProblem(refused, 403, 'PLINTH_AUTH_FORBIDDEN')
    for (let i = 0; i < 2; i++) {
      const res = await a.app.inject({
        method: 'POST',
        url: `/api/v1/admin/incidents/${stuffingId}/acknowledge`,
        headers: bearer(admin.token),
      })
      assert.equal(res.statusCode, 200, res.body)
      assert.equal(res.json().status, 'acknowledged')
    }
    const missing = await a.app.inject({
      url: '/api/v1/admin/incidents/00000000-0000-4000-8000-000000000000',
      headers: bearer(admin.token),
    })
    assertProblem(missing, 404, 'PLINTH_INCIDENT_NOT_FOUND')
  })

  it('resolves the incident by itself once the pattern is gone, notifies that once, and refuses to touch it again', async () => {
    clock.advance(11 * 60_000)
    await waitFor(
      'the incident resolved',
      async () => (await incidentsOf('credential-stuffing'))[0]?.status === 'resolved',
      { timeoutMs: 20_000, intervalMs: 200 },
    )
    await waitFor(
      'the incident.resolved webhook',
      () => deliveries('incident.resolved', stuffingId).length > 0,
      {
        timeoutMs: 20_000,
      },
    )
    await holdsFor('one resolution notice', () => deliveries('incident.resolved', stuffingId).length === 1, {
      forMs: 2000,
      intervalMs: 250,
    })
    assert.equal(
      (await mails('incident-resolved', 'ops@example.com')).filter((m) => m.subject.includes('Credential'))
        .length,
      1,
    )
    const again = await a.app.inject({
      method: 'POST',
      url: `/api/v1/admin/incidents/${stuffingId}/resolve`,
      headers: bearer(admin.token),
    })
    assertProblem(again, 409, 'PLINTH_INCIDENT_RESOLVED')
  })

  it('opens a condition raced by both instances once (unique active fingerprint), with one notification', async () => {
    const firing = {
      rule: 'jobs-dead-lettered',
      alert: 'PlinthJobsDeadLettered',
      kind: 'alert' as const,
      severity: 'ticket' as const,
      summary: 'Jobs of type race.test failed their last attempt',
      description: 'raced',
      labels: { name: 'race.test' },
      value: 1,
    }
    const opened = await Promise.all(
      Array.from({ length: 6 }, (_, i) => incidentServiceOf((i % 2 ? a : b).context).open(firing)),
    )
    assert.equal(opened.filter(Boolean).length, 1)
    const rows = await a.db.kysely
      .selectFrom('incidents')
      .select('id')
      .where('fingerprint', '=', 'jobs-dead-lettered{name=race.test}')
      .execute()
    assert.equal(rows.length, 1)
    await waitFor('its webhook', () => deliveries('incident.opened', rows[0]!.id).length > 0, {
      timeoutMs: 20_000,
    })
    await holdsFor('one webhook', () => deliveries('incident.opened', rows[0]!.id).length === 1, {
      forMs: 1500,
    })
  })

  it('hands evaluation over to the other instance when the evaluator stops', async () => {
    const [ea] = evaluators()
    const first = ea?.isLeader ? a : b
    const other = first === a ? b : a
    await first.close()
    await waitFor(
      'the other evaluator',
      () => alertRuntimes.get(other.context)?.evaluator?.isLeader === true,
      {
        timeoutMs: 15_000,
      },
    )
  })
})
