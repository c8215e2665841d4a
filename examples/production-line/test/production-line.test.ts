/**
 * The production line through its HTTP API on a real Plinth (`plinth/testing`): machines,
 * batches of readings, thresholds and the alerts they raise (delivered to a real webhook
 * receiver), the hourly roll-up job and its schedule, retention, and export and erasure of a
 * person's data in the module's tables.
 */
import assert from 'node:assert/strict'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { after, before, describe, it } from 'node:test'
import { createTestPlinth, type TestPlinth, type TestUser } from 'plinth/testing'
import { production, READINGS_KEPT_DAYS } from '../src/production.module.ts'

async function eventually<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  timeoutMs = 20_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await probe()
    if (value !== undefined) return value
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

/** A webhook endpoint on 127.0.0.1 that records what it receives. */
async function startReceiver() {
  const received: { headers: Record<string, unknown>; body: unknown }[] = []
  const server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      received.push({ headers: req.headers, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) })
      res.writeHead(200).end()
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return { url: `http://127.0.0.1:${port}/hooks`, received, close: () => new Promise((r) => server.close(r)) }
}

describe('production line', () => {
  let t: TestPlinth
  let receiver: Awaited<ReturnType<typeof startReceiver>>
  let admin: TestUser
  let operator: TestUser
  let gateway: TestUser
  let viewer: TestUser

  before(async () => {
    receiver = await startReceiver()
    t = await createTestPlinth({
      modules: [production],
      // The receiver is on this machine: let webhooks reach loopback over plain HTTP.
      env: { PLINTH_WEBHOOKS_ALLOW_PRIVATE: 'true', PLINTH_WEBHOOKS_ALLOW_HTTP: 'true' },
    })
    admin = await t.createUser({ role: 'admin' })
    operator = await t.createUser({ role: 'operator' })
    gateway = await t.createUser({ role: 'member' })
    viewer = await t.createUser({ role: 'viewer' })
    const hook = await admin.inject({
      method: 'POST',
      url: '/api/v1/webhooks',
      payload: { url: receiver.url, eventTypes: ['production.*'] },
    })
    assert.equal(hook.statusCode, 201, hook.body)
    for (const machine of [
      { id: 'press-01', name: 'Press 1', line: 'A' },
      { id: 'oven-02', name: 'Oven 2', line: 'B' },
    ]) {
      const res = await operator.inject({
        method: 'POST',
        url: '/api/v1/production/machines',
        payload: machine,
      })
      assert.equal(res.statusCode, 201, res.body)
    }
  })
  after(async () => {
    await t?.close()
    await receiver?.close()
  })

  it('lets operators manage machines, and nobody below them', async () => {
    const refused = await gateway.inject({
      method: 'POST',
      url: '/api/v1/production/machines',
      payload: { id: 'saw-03', name: 'Saw', line: 'A' },
    })
    assert.equal(refused.statusCode, 403)
    const twice = await operator.inject({
      method: 'POST',
      url: '/api/v1/production/machines',
      payload: { id: 'press-01', name: 'Again', line: 'A' },
    })
    assert.equal(twice.statusCode, 409)
    assert.equal(twice.json().code, 'PLINTH_DB_CONFLICT')
    const list = await viewer.inject('/api/v1/production/machines')
    assert.deepEqual(
      list.json().machines.map((m: { id: string }) => m.id),
      ['oven-02', 'press-01'],
    )
    const audit = await t.context.db.kysely
      .selectFrom('audit_log')
      .select(['action', 'target_id'])
      .where('action', '=', 'machine:created')
      .execute()
    assert.deepEqual(audit.map((a) => a.target_id).sort(), ['oven-02', 'press-01'])
  })

  it('ingests a batch, raises an alert per reading beyond a threshold, and delivers it as a webhook', async () => {
    const set = await operator.inject({
      method: 'PUT',
      url: '/api/v1/production/machines/oven-02/thresholds/temperature_c',
      payload: { min: 150, max: 250 },
    })
    assert.equal(set.statusCode, 200, set.body)
    const at = new Date().toISOString()
    const res = await gateway.inject({
      method: 'POST',
      url: '/api/v1/production/readings',
      payload: {
        readings: [
          { machineId: 'oven-02', metric: 'temperature_c', value: 200, at },
          { machineId: 'oven-02', metric: 'temperature_c', value: 262.5, at },
          { machineId: 'oven-02', metric: 'temperature_c', value: 140, at },
          { machineId: 'press-01', metric: 'pressure_bar', value: 9000, at },
        ],
      },
    })
    assert.equal(res.statusCode, 201, res.body)
    const body = res.json()
    assert.equal(body.accepted, 4)
    assert.deepEqual(
      body.alerts.map((a: { bound: string; value: number }) => [a.bound, a.value]),
      [
        ['max', 262.5],
        ['min', 140],
      ],
    )
    const delivered = await eventually('two production.alert deliveries', async () =>
      receiver.received.length >= 2 ? receiver.received : undefined,
    )
    const events = delivered.map((d) => d.body as { type: string; data: { value: number } })
    assert.deepEqual(
      events.map((e) => e.type),
      ['production.alert', 'production.alert'],
    )
    assert.deepEqual(events.map((e) => e.data.value).sort(), [140, 262.5])

    const open = await viewer.inject('/api/v1/production/alerts?open=true')
    assert.equal(open.json().alerts.length, 2)
    const id = body.alerts[0].id
    assert.equal(
      (await viewer.inject({ method: 'POST', url: `/api/v1/production/alerts/${id}/acknowledge` }))
        .statusCode,
      403,
    )
    const ack = await operator.inject({ method: 'POST', url: `/api/v1/production/alerts/${id}/acknowledge` })
    assert.equal(ack.statusCode, 200, ack.body)
    const again = await operator.inject({
      method: 'POST',
      url: `/api/v1/production/alerts/${id}/acknowledge`,
    })
    assert.equal(again.statusCode, 404)
    assert.equal((await viewer.inject('/api/v1/production/alerts?open=true')).json().alerts.length, 1)
  })

  it('takes readings from a gateway holding an API token scoped to production:ingest only', async () => {
    const created = await gateway.inject({
      method: 'POST',
      url: '/api/v1/me/tokens',
      payload: { name: 'line A gateway', scopes: ['production:ingest'] },
    })
    assert.equal(created.statusCode, 201, created.body)
    const token = { authorization: `Bearer ${created.json().token}` }
    const sent = await t.inject({
      method: 'POST',
      url: '/api/v1/production/readings',
      headers: token,
      payload: {
        readings: [{ machineId: 'press-01', metric: 'cycle_s', value: 11, at: new Date().toISOString() }],
      },
    })
    assert.equal(sent.statusCode, 201, sent.body)
    assert.equal((await t.inject({ url: '/api/v1/production/machines', headers: token })).statusCode, 403)
    const metrics = await t.plinth.metrics.registry.metrics()
    assert.match(metrics, /^production_readings_ingested_total [1-9]/m)
    const health = await t.plinth.health.report()
    assert.deepEqual(health.components.production?.details, { machines: 2 })
  })

  it('refuses a whole batch that names an unknown machine, storing none of it', async () => {
    const before = await t.context.db.kysely
      .selectFrom('production_readings' as never)
      .select((eb) => eb.fn.countAll<string>().as('n'))
      .executeTakeFirstOrThrow()
    const at = new Date().toISOString()
    const res = await gateway.inject({
      method: 'POST',
      url: '/api/v1/production/readings',
      payload: {
        readings: [
          { machineId: 'press-01', metric: 'pressure_bar', value: 1, at },
          { machineId: 'ghost-9', metric: 'pressure_bar', value: 1, at },
        ],
      },
    })
    assert.equal(res.statusCode, 422)
    assert.equal(res.json().code, 'PLINTH_HTTP_VALIDATION_FAILED')
    assert.deepEqual(res.json().errors, [
      { in: 'body', field: 'readings.1.machineId', message: 'no machine ghost-9' },
    ])
    const afterCount = await t.context.db.kysely
      .selectFrom('production_readings' as never)
      .select((eb) => eb.fn.countAll<string>().as('n'))
      .executeTakeFirstOrThrow()
    assert.equal(afterCount.n, before.n)
    const tooMany = await gateway.inject({
      method: 'POST',
      url: '/api/v1/production/readings',
      payload: {
        readings: Array.from({ length: 1001 }, () => ({ machineId: 'press-01', metric: 'x', value: 1, at })),
      },
    })
    assert.equal(tooMany.statusCode, 422)
    assert.equal(
      (await viewer.inject({ method: 'POST', url: '/api/v1/production/readings', payload: { readings: [] } }))
        .statusCode,
      403,
    )
  })

  it('rolls up an hour of readings in its job, again with the same result, on an hourly schedule', async () => {
    const hour = new Date(Date.UTC(2026, 0, 15, 10))
    const at = (min: number) => new Date(hour.getTime() + min * 60_000).toISOString()
    const res = await gateway.inject({
      method: 'POST',
      url: '/api/v1/production/readings',
      payload: {
        readings: [
          { machineId: 'press-01', metric: 'cycle_s', value: 10, at: at(1) },
          { machineId: 'press-01', metric: 'cycle_s', value: 14, at: at(30) },
          { machineId: 'press-01', metric: 'cycle_s', value: 12, at: at(59) },
          { machineId: 'press-01', metric: 'cycle_s', value: 99, at: at(60) }, // the next hour
        ],
      },
    })
    assert.equal(res.statusCode, 201, res.body)
    const expected = [{ metric: 'cycle_s', hour: hour.toISOString(), readings: 3, min: 10, max: 14, avg: 12 }]
    for (let run = 0; run < 2; run++) {
      const job = await t.context.jobs.enqueue('production.rollup', { hour: hour.toISOString() })
      await eventually('the roll-up job to complete', async () => {
        const view = await t.context.jobs.get(job.id)
        if (view.state === 'failed') throw new Error(`roll-up failed: ${JSON.stringify(view.lastError)}`)
        return view.state === 'completed' ? view : undefined
      })
      const rollups = await viewer.inject('/api/v1/production/machines/press-01/rollups?metric=cycle_s')
      assert.deepEqual(
        rollups.json().rollups.filter((r: { hour: string }) => r.hour === hour.toISOString()),
        expected,
      )
    }
    const schedules = await t.context.schedules.list({ jobName: 'production.rollup' })
    assert.deepEqual(
      schedules.map((s) => [s.id, s.cron]),
      [['production.rollup-hourly', '5 * * * *']],
    )
  })

  it(`deletes readings older than ${READINGS_KEPT_DAYS} days in Plinth's retention run`, async () => {
    const old = new Date(Date.now() - (READINGS_KEPT_DAYS + 1) * 86_400_000).toISOString()
    const res = await gateway.inject({
      method: 'POST',
      url: '/api/v1/production/readings',
      payload: { readings: [{ machineId: 'press-01', metric: 'old_metric', value: 1, at: old }] },
    })
    assert.equal(res.statusCode, 201)
    const report = await t.context.retention.run()
    const rule = report.results.find((r) => r.rule === 'production.readings')
    assert.ok(rule && rule.deleted >= 1, JSON.stringify(report))
  })

  it("exports and erases a person's data in the module's tables", async () => {
    const person = await t.createUser({ role: 'member' })
    const at = new Date().toISOString()
    await person.inject({
      method: 'POST',
      url: '/api/v1/production/readings',
      payload: { readings: [{ machineId: 'press-01', metric: 'by_person', value: 7, at }] },
    })
    assert.equal(
      (await person.inject({ method: 'PUT', url: '/api/v1/production/machines/oven-02/watch' })).statusCode,
      204,
    )
    const watches = await person.inject('/api/v1/production/watches')
    assert.deepEqual(watches.json().machines, [{ id: 'oven-02', openAlerts: 1 }])

    const exported = await person.inject('/api/v1/me/export')
    assert.equal(exported.statusCode, 200, exported.body)
    const text = exported.body
    for (const table of ['production_readings', 'production_watches']) assert.match(text, new RegExp(table))
    assert.match(text, /by_person/)

    const erased = await person.inject({
      method: 'DELETE',
      url: '/api/v1/me',
      payload: { password: person.password },
    })
    assert.equal(erased.statusCode, 200, erased.body)
    const db = t.context.db.kysely
    const left = await db
      .selectFrom('production_watches' as never)
      .selectAll()
      .where('user_id' as never, '=', person.id as never)
      .execute()
    assert.equal(left.length, 0)
    const reading = await db
      .selectFrom('production_readings' as never)
      .select(['ingested_by' as never])
      .where('metric' as never, '=', 'by_person' as never)
      .executeTakeFirstOrThrow()
    assert.deepEqual(reading, { ingested_by: null })
  })
})
