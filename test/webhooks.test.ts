import assert from 'node:assert/strict'
import { createHmac, randomUUID, timingSafeEqual } from 'node:crypto'
import { after, before, describe, it } from 'node:test'
import type { InjectOptions } from 'fastify'
import { PLINTH_VERSION } from '../src/core/version.ts'
import { webhookSecretColumn } from '../src/modules/webhooks/encrypted-columns.ts'
import {
  createEventBus,
  matchesEventType,
  patternsMatching,
  WEBHOOK_DELIVERY_JOB,
} from '../src/modules/webhooks/event-bus.ts'
import { signatureHeader, verifySignature } from '../src/modules/webhooks/signature.ts'
import { PlinthError } from '../src/shared/errors.ts'
import { bearer, createUser, NO_RATE_LIMITS, type Session, uniqueEmail, waitFor } from './helpers/accounts.ts'
import { assertProblem } from './helpers/assert-problem.ts'
import { captureLogs } from './helpers/log-capture.ts'
import { skipUnlessPostgres } from './helpers/services.ts'
import { testConfig } from './helpers/test-config.ts'
import { type Backend, startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'
import { type Received, type Receiver, startReceiver } from './helpers/webhook-receiver.ts'

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

/** Fast retries and polling, loopback receivers allowed. */
const FAST = {
  ...NO_RATE_LIMITS,
  PLINTH_WEBHOOKS_ALLOW_PRIVATE: 'true',
  PLINTH_WEBHOOKS_RETRY_DELAY: '1s',
  PLINTH_WEBHOOKS_TIMEOUT: '1500ms',
  PLINTH_JOBS_POLL_INTERVAL: '500ms',
}

/** What a receiver does, written independently of Plinth's own helper: HMAC over "<t>.<raw body>". */
function receiverVerifies(secret: string, r: Received, toleranceSeconds = 300): boolean {
  const header = String(r.headers['plinth-signature'])
  const fields = Object.fromEntries(header.split(',').map((kv) => kv.split('=') as [string, string]))
  const t = Number(fields.t)
  if (Math.abs(Date.now() / 1000 - t) > toleranceSeconds) return false
  const expected = createHmac('sha256', secret).update(`${t}.`).update(r.raw).digest()
  const given = Buffer.from(fields.v1 ?? '', 'hex')
  return given.length === expected.length && timingSafeEqual(given, expected)
}

function harness(getPlinth: () => TestPlinth) {
  const api = (who: Session | undefined, method: InjectOptions['method'], url: string, payload?: unknown) =>
    getPlinth().app.inject({
      method,
      url: `/api/v1${url}`,
      ...(who ? { headers: bearer(who.token) } : {}),
      ...(payload === undefined ? {} : { payload: payload as object }),
    })
  const deliveriesOf = async (who: Session, id: string, query = '') => {
    const res = await api(who, 'GET', `/webhooks/${id}/deliveries${query}`)
    assert.equal(res.statusCode, 200, res.body)
    return res.json() as { deliveries: Record<string, unknown>[]; nextCursor: string | null }
  }
  const waitForDeliveries = (who: Session, id: string, count: number, timeoutMs = 20_000) =>
    waitFor(
      `${count} delivery attempts of ${id}`,
      async () => {
        const { deliveries } = await deliveriesOf(who, id)
        return deliveries.length >= count ? deliveries : undefined
      },
      { timeoutMs, intervalMs: 100 },
    )
  /**
   * Every delivery job has finished (none waiting, retrying or running): no further request can
   * reach the receiver, so "exactly these arrived" can be asserted without sleeping.
   */
  const deliveryJobsSettled = () =>
    waitFor(
      'every webhook delivery job to finish',
      async () => {
        for (const state of ['created', 'retry', 'active'] as const) {
          const { items } = await getPlinth().jobs.list({ name: WEBHOOK_DELIVERY_JOB, state, limit: 1 })
          if (items.length > 0) return false
        }
        return true
      },
      { timeoutMs: 30_000, intervalMs: 100 },
    )
  return { api, deliveriesOf, waitForDeliveries, deliveryJobsSettled }
}

describe('webhooks on the embedded database', () => {
  const config = testConfig({ ...FAST, PLINTH_LOG_BODIES: 'true' })
  const logs = captureLogs(config, 'debug')
  let plinth: TestPlinth
  let receiver: Receiver
  let operator: Session
  let member: Session
  let viewer: Session
  const { api, deliveriesOf, waitForDeliveries, deliveryJobsSettled } = harness(() => plinth)
  const secrets: string[] = []

  const subscribe = async (body: Record<string, unknown>) => {
    const res = await api(operator, 'POST', '/webhooks', body)
    assert.equal(res.statusCode, 201, res.body)
    const created = res.json()
    secrets.push(created.secret)
    return created as { id: string; secret: string; url: string; eventTypes: string[] }
  }
  const emit = async (type: string, data: unknown, extra: Record<string, unknown> = {}, who = member) => {
    const res = await api(who, 'POST', '/events', { type, data, ...extra })
    assert.equal(res.statusCode, 202, res.body)
    return res.json() as { id: string; deliveries: number }
  }

  before(async () => {
    receiver = await startReceiver()
    plinth = await startTestPlinth({ config, logger: logs.logger })
    operator = await createUser(plinth, uniqueEmail('operator'), 'operator')
    member = await createUser(plinth, uniqueEmail('member'), 'member')
    viewer = await createUser(plinth, uniqueEmail('viewer'), 'viewer')
  })
  after(async () => {
    await plinth?.close()
    await receiver?.close()
  })

  it('creates a subscription, shows its secret once, and stores it encrypted', async () => {
    const created = await subscribe({
      url: receiver.url('/created'),
      eventTypes: ['order.created'],
      description: 'orders',
    })
    assert.match(created.id, UUID)
    assert.match(created.secret, /^[A-Za-z0-9_-]{43}$/, '32 random bytes, base64url')
    assert.deepEqual(created.eventTypes, ['order.created'])

    const list = await api(operator, 'GET', '/webhooks')
    assert.equal(list.statusCode, 200)
    assert.ok(!list.body.includes(created.secret))
    const listed = list.json().webhooks.find((w: { id: string }) => w.id === created.id)
    const { secret: _, ...shown } = created
    assert.deepEqual(listed, shown)
    assert.ok(!('secret' in listed))
    const one = await api(operator, 'GET', `/webhooks/${created.id}`)
    assert.deepEqual(one.json(), shown)

    const row = await plinth.db.kysely
      .selectFrom('webhook_subscriptions')
      .selectAll()
      .where('id', '=', created.id)
      .executeTakeFirstOrThrow()
    assert.ok(!JSON.stringify(row).includes(created.secret))
    assert.match(row.secret, /^v1\.[0-9a-f]{16}\./)
    assert.equal(
      await plinth.context.keyring.decryptStringAsync(row.secret, webhookSecretColumn.aad(created.id)),
      created.secret,
    )
    assert.equal(row.created_by, operator.userId)
    await plinth.context.audit.seal()
    const audit = await plinth.db.kysely
      .selectFrom('audit_log')
      .selectAll()
      .where('action', '=', 'webhook:created')
      .where('target_id', '=', created.id)
      .execute()
    assert.equal(audit.length, 1)
    assert.ok(!JSON.stringify(audit).includes(created.secret))
  })

  it('delivers an event signed, with the delivery id, event id and user agent, and records the attempt', async () => {
    const sub = await subscribe({ url: receiver.url('/signed'), eventTypes: ['invoice.paid'] })
    const emitted = await emit('invoice.paid', { invoiceId: 42, amount: '9.99' })
    assert.match(emitted.id, UUID)
    assert.equal(emitted.deliveries, 1)

    const [attempt] = await waitForDeliveries(operator, sub.id, 1)
    const [got] = receiver.of('/signed')
    assert.ok(got, 'the receiver got the event')
    assert.equal(got.method, 'POST')
    assert.equal(got.headers['content-type'], 'application/json')
    assert.equal(got.headers['user-agent'], `Plinth-Webhooks/${PLINTH_VERSION}`)
    assert.equal(got.headers['plinth-event'], emitted.id)
    assert.match(String(got.headers['plinth-delivery']), UUID)
    assert.match(String(got.headers['plinth-signature']), /^t=\d+,v1=[0-9a-f]{64}$/)
    assert.ok(receiverVerifies(sub.secret, got), 'the signature verifies with the secret')
    assert.ok(!receiverVerifies('another-secret-entirely', got), 'and not with another secret')
    assert.ok(verifySignature(sub.secret, String(got.headers['plinth-signature']), got.raw))
    assert.ok(!verifySignature(sub.secret, String(got.headers['plinth-signature']), `${got.raw} `))
    const body = JSON.parse(got.raw.toString('utf8'))
    assert.deepEqual(Object.keys(body).sort(), ['createdAt', 'data', 'id', 'type'])
    assert.equal(body.id, emitted.id)
    assert.equal(body.type, 'invoice.paid')
    assert.deepEqual(body.data, { invoiceId: 42, amount: '9.99' })
    assert.ok(Math.abs(Date.parse(body.createdAt) - Date.now()) < 30_000)

    assert.equal(attempt!.id, got.headers['plinth-delivery'])
    assert.equal(attempt!.eventId, emitted.id)
    assert.equal(attempt!.eventType, 'invoice.paid')
    assert.equal(attempt!.status, 'succeeded')
    assert.equal(attempt!.responseStatus, 200)
    assert.equal(attempt!.attempt, 1)
    assert.equal(attempt!.error, null)
    assert.ok(typeof attempt!.durationMs === 'number')
    const job = await plinth.jobs.get(String(attempt!.jobId))
    assert.equal(job.name, WEBHOOK_DELIVERY_JOB)
  })

  it('retries a receiver that answers 500 twice, recording all three attempts', async () => {
    const sub = await subscribe({ url: receiver.url('/flaky'), eventTypes: ['report.ready'] })
    receiver.script('/flaky', [500, 500, 200])
    const emitted = await emit('report.ready', { n: 1 })
    const attempts = await waitForDeliveries(operator, sub.id, 3, 30_000)
    const oldestFirst = [...attempts].reverse()
    assert.deepEqual(
      oldestFirst.map((a) => [a.attempt, a.status, a.responseStatus]),
      [
        [1, 'failed', 500],
        [2, 'failed', 500],
        [3, 'succeeded', 200],
      ],
    )
    assert.match(String(oldestFirst[0]!.error), /^answered 500: planned 500/)
    assert.equal(new Set(attempts.map((a) => a.id)).size, 3, 'a new delivery id per attempt')
    assert.equal(new Set(attempts.map((a) => a.jobId)).size, 1, 'one job')
    const got = receiver.of('/flaky')
    assert.equal(got.length, 3)
    assert.deepEqual(
      got.map((r) => r.headers['plinth-delivery']),
      oldestFirst.map((a) => a.id),
    )
    for (const r of got) {
      assert.equal(r.headers['plinth-event'], emitted.id, 'the event id is stable across attempts')
      assert.ok(receiverVerifies(sub.secret, r))
    }
    assert.ok(got[1]!.at - got[0]!.at >= 900, 'the retry waited')
  })

  it('fails an attempt on a redirect (not followed) and on a timeout', async () => {
    const sub = await subscribe({ url: receiver.url('/moved'), eventTypes: ['thing.moved'] })
    receiver.script('/moved', [{ redirect: receiver.url('/elsewhere') }, 'hang', 200])
    await emit('thing.moved', null)
    const attempts = [...(await waitForDeliveries(operator, sub.id, 3, 30_000))].reverse()
    assert.equal(attempts[0]!.status, 'failed')
    assert.equal(attempts[0]!.responseStatus, 302)
    assert.match(String(attempts[0]!.error), /redirects are not followed/)
    assert.equal(attempts[1]!.status, 'failed')
    assert.equal(attempts[1]!.responseStatus, null)
    assert.match(String(attempts[1]!.error), /timed out after 1500 ms/)
    assert.ok(Number(attempts[1]!.durationMs) >= 1400)
    assert.equal(attempts[2]!.status, 'succeeded')
    assert.equal(receiver.of('/elsewhere').length, 0)
  })

  it('records a network error as a failed attempt', async () => {
    const closed = await startReceiver()
    const url = closed.url('/gone')
    await closed.close()
    const sub = await subscribe({ url, eventTypes: ['net.down'] })
    await emit('net.down', {})
    const [attempt] = await waitForDeliveries(operator, sub.id, 1)
    assert.equal(attempt!.status, 'failed')
    assert.match(String(attempt!.error), /ECONNREFUSED/)
    await api(operator, 'PATCH', `/webhooks/${sub.id}`, { active: false })
  })

  it('stores the start of a binary or long answer as printable text', async () => {
    const sub = await subscribe({ url: receiver.url('/binary'), eventTypes: ['binary.answer'] })
    const body = Buffer.concat([Buffer.from([0, 1, 2]), Buffer.from('nope\u0000'), Buffer.alloc(4000, 0x61)])
    receiver.script('/binary', [{ status: 400, body }])
    await emit('binary.answer', {})
    const [attempt] = await waitForDeliveries(operator, sub.id, 1)
    await api(operator, 'PATCH', `/webhooks/${sub.id}`, { active: false })
    assert.equal(attempt!.responseStatus, 400)
    assert.match(String(attempt!.error), /^answered 400: nopea+…$/)
    assert.ok(String(attempt!.error).length <= 501)
  })

  it('matches exact types, "*", and prefixes ending in ".*" or ":*"; skips inactive subscriptions', async () => {
    const subs = {
      exact: await subscribe({ url: receiver.url('/m-exact'), eventTypes: ['shop.order.paid'] }),
      prefix: await subscribe({ url: receiver.url('/m-prefix'), eventTypes: ['shop.*'] }),
      deep: await subscribe({ url: receiver.url('/m-deep'), eventTypes: ['shop.order.*', 'other'] }),
      all: await subscribe({ url: receiver.url('/m-all'), eventTypes: ['*'] }),
      colon: await subscribe({ url: receiver.url('/m-colon'), eventTypes: ['user:*'] }),
      none: await subscribe({ url: receiver.url('/m-none'), eventTypes: ['shop'] }),
      paused: await subscribe({ url: receiver.url('/m-paused'), eventTypes: ['*'], active: false }),
    }
    try {
      assert.equal((await emit('shop.order.paid', {})).deliveries, 4)
      assert.equal((await emit('user:created', {})).deliveries, 2)
      assert.equal(
        (await emit('shop', {})).deliveries,
        2,
        'exact "shop" and "*"; "shop.*" needs a dot after it',
      )
      const expected = { exact: 1, prefix: 1, deep: 1, all: 3, colon: 1, none: 1, paused: 0 }
      await waitFor('the matching deliveries', async () =>
        Object.entries(expected).every(([k, n]) => receiver.of(`/m-${k}`).length === n),
      )
      await deliveryJobsSettled()
      for (const [k, n] of Object.entries(expected)) assert.equal(receiver.of(`/m-${k}`).length, n, k)
    } finally {
      for (const s of Object.values(subs)) await api(operator, 'DELETE', `/webhooks/${s.id}`)
    }
  })

  it('does not deliver an event id twice when it is emitted again', async () => {
    const sub = await subscribe({ url: receiver.url('/once'), eventTypes: ['job.done'] })
    const id = randomUUID()
    const first = await emit('job.done', { n: 1 }, { id })
    const again = await emit('job.done', { n: 2 }, { id })
    assert.deepEqual(first, { id, deliveries: 1 })
    assert.deepEqual(again, { id, deliveries: 0 })
    await waitForDeliveries(operator, sub.id, 1)
    await deliveryJobsSettled()
    assert.equal(receiver.of('/once').length, 1)
    assert.deepEqual(JSON.parse(receiver.of('/once')[0]!.raw.toString()).data, { n: 1 })
  })

  it("emits inside the caller's transaction on the one embedded connection: nothing on rollback, a delivery on commit", async () => {
    const sub = await subscribe({ url: receiver.url('/embedded-tx'), eventTypes: ['etx.event'] })
    await assert.rejects(
      plinth.db.kysely.transaction().execute(async (trx) => {
        assert.equal(
          (await plinth.context.events.emit('etx.event', { n: 'rolled back' }, { db: trx })).deliveries,
          1,
        )
        throw new Error('roll back')
      }),
      /roll back/,
    )
    await plinth.db.kysely.transaction().execute(async (trx) => {
      await plinth.context.events.emit('etx.event', { n: 'committed' }, { db: trx })
    })
    await waitForDeliveries(operator, sub.id, 1)
    await deliveryJobsSettled()
    assert.deepEqual(
      receiver.of('/embedded-tx').map((r) => JSON.parse(r.raw.toString()).data),
      [{ n: 'committed' }],
    )
  })

  it('completes without sending when the subscription is deleted or paused before delivery', async () => {
    const deleted = await subscribe({ url: receiver.url('/deleted'), eventTypes: ['late.event'] })
    const paused = await subscribe({ url: receiver.url('/paused'), eventTypes: ['late.event'] })
    const payload = (subscriptionId: string) => ({
      subscriptionId,
      eventId: randomUUID(),
      eventType: 'late.event',
      data: {},
      emittedAt: new Date().toISOString(),
    })
    const a = await plinth.jobs.enqueue(WEBHOOK_DELIVERY_JOB, payload(deleted.id), { delay: 1000 })
    const b = await plinth.jobs.enqueue(WEBHOOK_DELIVERY_JOB, payload(paused.id), { delay: 1000 })
    assert.equal((await api(operator, 'DELETE', `/webhooks/${deleted.id}`)).statusCode, 204)
    assert.equal((await api(operator, 'PATCH', `/webhooks/${paused.id}`, { active: false })).statusCode, 200)
    for (const [id, reason] of [
      [a.id, 'subscription deleted'],
      [b.id, 'subscription inactive'],
    ] as const) {
      const job = await waitFor(`job ${id}`, async () => {
        const j = await plinth.jobs.get(id)
        return j.state === 'completed' ? j : undefined
      })
      assert.deepEqual(job.output, { skipped: reason })
    }
    assert.equal(receiver.of('/deleted').length + receiver.of('/paused').length, 0)
    assert.deepEqual((await deliveriesOf(operator, paused.id)).deliveries, [])
  })

  it('drops the record of an attempt whose subscription was deleted while it was in flight', async () => {
    const sub = await subscribe({ url: receiver.url('/in-flight'), eventTypes: ['flight.event'] })
    receiver.script('/in-flight', ['hang'])
    await emit('flight.event', {})
    await waitFor('the request to arrive', async () => receiver.of('/in-flight').length === 1)
    const [job] = (await plinth.jobs.list({ name: WEBHOOK_DELIVERY_JOB, state: 'active', limit: 10 })).items
    assert.ok(job, 'the delivery is running')
    assert.equal((await api(operator, 'DELETE', `/webhooks/${sub.id}`)).statusCode, 204)
    const done = await waitFor(
      'the job to complete',
      async () => {
        const j = await plinth.jobs.get(job.id)
        return j.state === 'completed' ? j : undefined
      },
      { timeoutMs: 20_000 },
    )
    assert.deepEqual(done.output, { skipped: 'subscription deleted' })
    const rows = await plinth.db.kysely
      .selectFrom('webhook_deliveries')
      .select('id')
      .where('subscription_id', '=', sub.id)
      .execute()
    assert.deepEqual(rows, [])
  })

  it('changes a subscription (URL, types, description, active), deletes it, and answers 404 after', async () => {
    const sub = await subscribe({ url: receiver.url('/before'), eventTypes: ['a.b'] })
    const patched = await api(operator, 'PATCH', `/webhooks/${sub.id}`, {
      url: receiver.url('/after'),
      eventTypes: ['c.*'],
      description: 'moved',
    })
    assert.equal(patched.statusCode, 200, patched.body)
    assert.equal(patched.json().url, receiver.url('/after'))
    assert.deepEqual(patched.json().eventTypes, ['c.*'])
    assert.equal(patched.json().description, 'moved')
    assert.ok(Date.parse(patched.json().updatedAt) >= Date.parse(patched.json().createdAt))
    const cleared = await api(operator, 'PATCH', `/webhooks/${sub.id}`, { description: null })
    assert.equal(cleared.json().description, null)
    assertProblem(
      await api(operator, 'PATCH', `/webhooks/${sub.id}`, { url: 'https://u:p@example.com/' }),
      422,
      'PLINTH_WEBHOOK_URL_INVALID',
    )
    assertProblem(
      await api(operator, 'PATCH', `/webhooks/${sub.id}`, {}),
      422,
      'PLINTH_HTTP_VALIDATION_FAILED',
    )
    await plinth.context.audit.seal()
    const updated = await plinth.db.kysely
      .selectFrom('audit_log')
      .select('changes')
      .where('action', '=', 'webhook:updated')
      .where('target_id', '=', sub.id)
      .orderBy('seq')
      .execute()
    assert.equal(updated.length, 2)
    assert.deepEqual((updated[0]!.changes as { after: Record<string, unknown> }).after, {
      eventTypes: ['c.*'],
      description: 'moved',
      urlChanged: true,
    })

    assert.equal((await api(operator, 'DELETE', `/webhooks/${sub.id}`)).statusCode, 204)
    const missing = randomUUID()
    for (const [method, url, body] of [
      ['GET', `/webhooks/${sub.id}`],
      ['DELETE', `/webhooks/${sub.id}`],
      ['PATCH', `/webhooks/${sub.id}`, { active: true }],
      ['GET', `/webhooks/${sub.id}/deliveries`],
      ['GET', `/webhooks/${missing}`],
    ] as const)
      assertProblem(await api(operator, method, url, body), 404, 'PLINTH_WEBHOOK_NOT_FOUND')
    assertProblem(await api(operator, 'GET', '/webhooks/not-a-uuid'), 400, 'PLINTH_HTTP_INVALID_REQUEST')
  })

  it('pages delivery attempts newest first with a cursor, and filters them by event', async () => {
    const sub = await subscribe({ url: receiver.url('/paged'), eventTypes: ['page.*'] })
    const ids: string[] = []
    for (let i = 0; i < 3; i++) ids.push((await emit(`page.e${i}`, { i })).id)
    await waitForDeliveries(operator, sub.id, 3)
    const first = await deliveriesOf(operator, sub.id, '?limit=2')
    assert.equal(first.deliveries.length, 2)
    assert.ok(first.nextCursor)
    const second = await deliveriesOf(operator, sub.id, `?limit=2&cursor=${first.nextCursor}`)
    assert.equal(second.deliveries.length, 1)
    assert.equal(second.nextCursor, null)
    const all = [...first.deliveries, ...second.deliveries]
    assert.deepEqual(new Set(all.map((d) => d.eventId)), new Set(ids))
    const times = all.map((d) => Date.parse(String(d.createdAt)))
    assert.deepEqual(
      times,
      [...times].sort((a, b) => b - a),
    )
    const one = await deliveriesOf(operator, sub.id, `?eventId=${ids[1]}`)
    assert.deepEqual(
      one.deliveries.map((d) => d.eventId),
      [ids[1]],
    )
    assertProblem(
      await api(operator, 'GET', `/webhooks/${sub.id}/deliveries?cursor=bm9wZQ`),
      400,
      'PLINTH_HTTP_INVALID_REQUEST',
    )
  })

  it('uses a secret the caller chose, and validates the body', async () => {
    const secret = 'my-own-signing-secret-0123456789'
    const sub = await subscribe({ url: receiver.url('/own'), eventTypes: ['own.secret'], secret })
    assert.equal(sub.secret, secret)
    await emit('own.secret', 1)
    await waitForDeliveries(operator, sub.id, 1)
    assert.ok(receiverVerifies(secret, receiver.of('/own')[0]!))

    for (const body of [
      { url: receiver.url('/x'), eventTypes: [] },
      { url: receiver.url('/x'), eventTypes: ['Upper.Case'] },
      { url: receiver.url('/x'), eventTypes: ['a.*.b'] },
      { url: receiver.url('/x'), eventTypes: ['a', 'a'] },
      { url: receiver.url('/x'), eventTypes: ['a'], secret: 'short' },
      { url: receiver.url('/x'), eventTypes: ['a'], secret: 'has spaces in it, sixteen+' },
      { url: receiver.url('/x'), eventTypes: ['a'], extra: true },
      { eventTypes: ['a'] },
    ])
      assertProblem(await api(operator, 'POST', '/webhooks', body), 422, 'PLINTH_HTTP_VALIDATION_FAILED')
    for (const body of [{ type: 'Bad Type', data: 1 }, { data: 1 }, { type: 'ok', data: 1, id: 'nope' }])
      assertProblem(await api(member, 'POST', '/events', body), 422, 'PLINTH_HTTP_VALIDATION_FAILED')
  })

  it('refuses URLs with credentials or another scheme, even when private addresses are allowed', async () => {
    for (const [url, why] of [
      [`http://user:pw@127.0.0.1:${receiver.port}/`, /credentials/],
      ['ftp://example.com/hook', /scheme/],
      ['file:///etc/passwd', /scheme/],
      ['not a url', /absolute URL/],
    ] as const) {
      const body = assertProblem(
        await api(operator, 'POST', '/webhooks', { url, eventTypes: ['a'] }),
        422,
        'PLINTH_WEBHOOK_URL_INVALID',
      )
      assert.match(String(body.detail), why)
      assert.equal((body.errors as { field: string }[])[0]!.field, 'url')
    }
  })

  it('keeps webhooks behind permissions: members and viewers cannot manage them, viewers cannot emit', async () => {
    const sub = await subscribe({ url: receiver.url('/perm'), eventTypes: ['perm.x'] })
    for (const who of [member, viewer]) {
      for (const [method, url, body] of [
        ['GET', '/webhooks'],
        ['POST', '/webhooks', { url: receiver.url('/p'), eventTypes: ['a'] }],
        ['GET', `/webhooks/${sub.id}`],
        ['PATCH', `/webhooks/${sub.id}`, { active: false }],
        ['DELETE', `/webhooks/${sub.id}`],
        ['GET', `/webhooks/${sub.id}/deliveries`],
      ] as const)
        assertProblem(await api(who, method, url, body), 403, 'PLINTH_AUTH_FORBIDDEN')
    }
    assertProblem(
      await api(viewer, 'POST', '/events', { type: 'perm.x', data: 1 }),
      403,
      'PLINTH_AUTH_FORBIDDEN',
    )
    assertProblem(await api(undefined, 'GET', '/webhooks'), 401, 'PLINTH_AUTH_REQUIRED')
    assertProblem(
      await api(undefined, 'POST', '/events', { type: 'perm.x', data: 1 }),
      401,
      'PLINTH_AUTH_REQUIRED',
    )
    assert.equal((await emit('perm.x', 1, {}, member)).deliveries, 1)
    assert.equal((await emit('perm.x', 1, {}, operator)).deliveries, 1)
  })

  it('emits from code: validates type and id, and queues nothing without matching subscriptions', async () => {
    const { events } = plinth.context
    await assert.rejects(
      events.emit('Not Valid', {}),
      (e: unknown) => e instanceof PlinthError && e.code === 'PLINTH_EVENT_INVALID',
    )
    await assert.rejects(
      events.emit('ok.type', {}, { id: 'x' }),
      (e: unknown) => e instanceof PlinthError && e.code === 'PLINTH_EVENT_INVALID',
    )
    const r = await events.emit('nobody.listens', undefined)
    assert.equal(r.deliveries, 0)
    assert.match(r.id, UUID)
  })

  it('counts deliveries by outcome and times them on /api/metrics', async () => {
    const text = await plinth.metrics.registry.metrics()
    assert.match(text, /plinth_webhook_deliveries_total\{outcome="succeeded"\} [1-9]/)
    assert.match(text, /plinth_webhook_deliveries_total\{outcome="failed"\} [1-9]/)
    assert.match(text, /plinth_webhook_deliveries_total\{outcome="skipped"\} [1-9]/)
    assert.match(text, /plinth_webhook_delivery_duration_seconds_bucket\{le="0.05",outcome="succeeded"\}/)
  })

  it('never writes a secret to the log', () => {
    const text = logs.text()
    assert.ok(text.includes('webhook delivered'), 'the log was captured')
    assert.ok(secrets.length >= 10)
    for (const secret of secrets) assert.ok(!text.includes(secret), 'a webhook secret reached the log')
  })
})

describe('webhooks with private addresses refused (the default)', () => {
  let plinth: TestPlinth
  let receiver: Receiver
  let operator: Session
  const { api, waitForDeliveries } = harness(() => plinth)

  before(async () => {
    receiver = await startReceiver()
    plinth = await startTestPlinth({
      env: { ...NO_RATE_LIMITS, PLINTH_WEBHOOKS_RETRY_DELAY: '1s', PLINTH_JOBS_POLL_INTERVAL: '500ms' },
    })
    operator = await createUser(plinth, uniqueEmail('operator'), 'operator')
  })
  after(async () => {
    await plinth?.close()
    await receiver?.close()
  })

  it('refuses loopback, private, link-local and unresolvable hosts when subscribing', async () => {
    assert.equal(plinth.config.webhooksAllowPrivate, false)
    for (const [url, why] of [
      [receiver.url('/x'), /127\.0\.0\.1 is a loopback address/],
      [`http://localhost:${receiver.port}/x`, /localhost resolves to (127\.0\.0\.1|::1), a loopback address/],
      ['https://10.0.0.5/hook', /private address/],
      ['https://[fd00::1]/hook', /unique local/],
      ['http://169.254.169.254/latest/meta-data/', /link-local/],
      ['https://100.64.1.1/', /carrier-grade NAT/],
      ['https://0.0.0.0/', /unspecified/],
      ['https://[::ffff:127.0.0.1]/', /loopback/],
      ['https://no-such-host.invalid/hook', /does not resolve/],
    ] as const) {
      const body = assertProblem(
        await api(operator, 'POST', '/webhooks', { url, eventTypes: ['a'] }),
        422,
        'PLINTH_WEBHOOK_URL_INVALID',
      )
      assert.match(String(body.detail), why)
      assert.match(String(body.detail), /PLINTH_WEBHOOKS_ALLOW_PRIVATE|does not resolve/)
    }
    assert.deepEqual((await api(operator, 'GET', '/webhooks')).json().webhooks, [])
  })

  it('checks again at delivery time: a host that now resolves to loopback is not contacted', async () => {
    // As if `localhost` had resolved to a public address when the subscription was saved (DNS rebinding).
    const id = randomUUID()
    await plinth.db.kysely
      .insertInto('webhook_subscriptions')
      .values({
        id,
        url: `http://localhost:${receiver.port}/rebound`,
        event_types: ['rebind.test'],
        secret: plinth.context.keyring.encrypt('rebinding-secret-123456', webhookSecretColumn.aad(id)),
        updated_at: new Date(),
      })
      .execute()
    assert.equal((await plinth.context.events.emit('rebind.test', {})).deliveries, 1)
    const [attempt] = await waitForDeliveries(operator, id, 1)
    await api(operator, 'PATCH', `/webhooks/${id}`, { active: false })
    assert.equal(attempt!.status, 'failed')
    assert.equal(attempt!.responseStatus, null)
    assert.match(String(attempt!.error), /localhost resolves to (127\.0\.0\.1|::1), a loopback address/)
    assert.equal(receiver.received.length, 0, 'the receiver was never contacted')
  })

  it('refuses a stored IP literal at delivery time too', async () => {
    const id = randomUUID()
    await plinth.db.kysely
      .insertInto('webhook_subscriptions')
      .values({
        id,
        url: receiver.url('/literal'),
        event_types: ['literal.test'],
        secret: plinth.context.keyring.encrypt('literal-secret-1234567', webhookSecretColumn.aad(id)),
        updated_at: new Date(),
      })
      .execute()
    await plinth.context.events.emit('literal.test', {})
    const [attempt] = await waitForDeliveries(operator, id, 1)
    await api(operator, 'PATCH', `/webhooks/${id}`, { active: false })
    assert.match(String(attempt!.error), /127\.0\.0\.1 is a loopback address/)
    assert.equal(receiver.received.length, 0)
  })
})

describe('webhooks on an api process with a small queue and https required', () => {
  let plinth: TestPlinth
  before(async () => {
    plinth = await startTestPlinth({
      env: {
        ...NO_RATE_LIMITS,
        PLINTH_ROLE: 'api',
        PLINTH_JOBS_MAX_QUEUED: '2',
        PLINTH_WEBHOOKS_ALLOW_HTTP: 'false',
        PLINTH_WEBHOOKS_ALLOW_PRIVATE: 'true',
      },
    })
  })
  after(() => plinth?.close())

  it('refuses plain http when PLINTH_WEBHOOKS_ALLOW_HTTP is off (the default outside development and test)', async () => {
    const operator = await createUser(plinth, uniqueEmail('operator'), 'operator')
    const res = await plinth.app.inject({
      method: 'POST',
      url: '/api/v1/webhooks',
      headers: bearer(operator.token),
      payload: { url: 'http://127.0.0.1:9/hook', eventTypes: ['a'] },
    })
    const body = assertProblem(res, 422, 'PLINTH_WEBHOOK_URL_INVALID')
    assert.match(String(body.detail), /must be https/)
    assert.equal(testConfig({ PLINTH_ENV: 'development' }).webhooksAllowHttp, true)
    assert.equal(testConfig({ PLINTH_ENV: 'test' }).webhooksAllowHttp, true)
  })

  it('answers 503 with Retry-After when the delivery queue is full, and queues nothing for that event', async () => {
    const member = await createUser(plinth, uniqueEmail('member'), 'member')
    const id = randomUUID()
    await plinth.db.kysely
      .insertInto('webhook_subscriptions')
      .values({
        id,
        url: 'https://127.0.0.1:9/full',
        event_types: ['full.*'],
        secret: plinth.context.keyring.encrypt('queue-full-secret-1234', webhookSecretColumn.aad(id)),
        updated_at: new Date(),
      })
      .execute()
    const emit = (type: string) =>
      plinth.app.inject({
        method: 'POST',
        url: '/api/v1/events',
        headers: bearer(member.token),
        payload: { type, data: {} },
      })
    // No worker runs in an api process: the jobs wait, and the queue fills. The first two go
    // through a second bus over the same engine, so that the instance's own bus reads the depth
    // afresh on the third (it caches the count for a second) instead of the test sleeping that out.
    const filler = createEventBus({
      config: plinth.config,
      db: plinth.db,
      jobs: plinth.jobs,
      logger: plinth.logger,
    })
    assert.equal((await filler.emit('full.one', {})).deliveries, 1)
    assert.equal((await filler.emit('full.two', {})).deliveries, 1)
    const res = await emit('full.three')
    assertProblem(res, 503, 'PLINTH_JOB_QUEUE_FULL')
    assert.ok(Number(res.headers['retry-after']) >= 1)
    assert.equal(await plinth.jobs.store.waiting(WEBHOOK_DELIVERY_JOB, 100), 2)
  })
})

describe('emitting before the job engine runs', () => {
  it('answers PLINTH_JOBS_UNAVAILABLE', async () => {
    const plinth = await startTestPlinth({ prepare: false })
    try {
      await assert.rejects(
        plinth.context.events.emit('too.early', {}),
        (e: unknown) => e instanceof PlinthError && e.code === 'PLINTH_JOBS_UNAVAILABLE',
      )
    } finally {
      await plinth.close()
    }
  })
})

describe('event matching', () => {
  it('lists the patterns an event type matches', () => {
    assert.deepEqual(patternsMatching('a.b:c'), ['a.b:c', '*', 'a.*', 'a.b:*'])
    assert.deepEqual(patternsMatching('solo'), ['solo', '*'])
  })
  it('matches like the SQL does', () => {
    assert.ok(matchesEventType(['*'], 'x'))
    assert.ok(matchesEventType(['a.*'], 'a.b.c'))
    assert.ok(!matchesEventType(['a.*'], 'a'))
    assert.ok(!matchesEventType(['a.*'], 'ab.c'))
    assert.ok(matchesEventType(['b', 'a:*'], 'a:x'))
  })
  it('signs as documented', () => {
    const header = signatureHeader('s3cret', 1_700_000_000, '{"a":1}')
    const hex = createHmac('sha256', 's3cret').update('1700000000.{"a":1}').digest('hex')
    assert.equal(header, `t=1700000000,v1=${hex}`)
    assert.ok(verifySignature('s3cret', header, '{"a":1}', { now: 1_700_000_100_000 }))
    assert.ok(
      !verifySignature('s3cret', header, '{"a":1}', { now: 1_700_000_301_000 }),
      'outside the tolerance',
    )
    assert.ok(
      verifySignature('s3cret', `t=1700000000,v1=${'0'.repeat(64)},v1=${hex}`, '{"a":1}', {
        now: 1_700_000_000_000,
      }),
    )
    assert.ok(!verifySignature('s3cret', 'v1=abc', '{"a":1}'))
  })
})

for (const backend of ['postgres'] as Backend[]) {
  describe(`webhooks on ${backend}`, { skip: await skipUnlessPostgres() }, () => {
    let plinth: TestPlinth
    let receiver: Receiver
    let operator: Session
    const { api, waitForDeliveries, deliveryJobsSettled } = harness(() => plinth)

    before(async () => {
      receiver = await startReceiver()
      plinth = await startTestPlinth({ backend, env: FAST })
      operator = await createUser(plinth, uniqueEmail('operator'), 'operator')
    })
    after(async () => {
      await plinth?.close()
      await receiver?.close()
    })

    it('delivers with retries and records every attempt', async () => {
      const res = await api(operator, 'POST', '/webhooks', { url: receiver.url('/pg'), eventTypes: ['pg.*'] })
      assert.equal(res.statusCode, 201, res.body)
      const sub = res.json()
      receiver.script('/pg', [503, 200])
      const emitted = await api(operator, 'POST', '/events', { type: 'pg.event', data: { ok: true } })
      assert.equal(emitted.json().deliveries, 1)
      const attempts = await waitForDeliveries(operator, sub.id, 2, 30_000)
      assert.deepEqual(
        attempts.map((a) => [a.attempt, a.status, a.responseStatus]),
        [
          [2, 'succeeded', 200],
          [1, 'failed', 503],
        ],
      )
      for (const r of receiver.of('/pg')) assert.ok(receiverVerifies(sub.secret, r))
    })

    it("emits inside the caller's transaction: nothing on rollback, a delivery on commit", async () => {
      const res = await api(operator, 'POST', '/webhooks', {
        url: receiver.url('/tx'),
        eventTypes: ['tx.event'],
      })
      const sub = res.json()
      await assert.rejects(
        plinth.db.kysely.transaction().execute(async (trx) => {
          const r = await plinth.context.events.emit('tx.event', { n: 'rolled back' }, { db: trx })
          assert.equal(r.deliveries, 1)
          throw new Error('roll back')
        }),
        /roll back/,
      )
      await plinth.db.kysely.transaction().execute(async (trx) => {
        await plinth.context.events.emit('tx.event', { n: 'committed' }, { db: trx })
      })
      await waitForDeliveries(operator, sub.id, 1)
      await deliveryJobsSettled()
      assert.deepEqual(
        receiver.of('/tx').map((r) => JSON.parse(r.raw.toString()).data),
        [{ n: 'committed' }],
      )
    })
  })
}
