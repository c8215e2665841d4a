import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { after, before, describe, it } from 'node:test'
import type { LightMyRequestResponse } from 'fastify'
import { sql } from 'kysely'
import { Type } from 'typebox'
import { deadLetterQueue, defineJob } from '../src/core/jobs.ts'
import type { PlinthModule } from '../src/core/module.ts'
import type { AuditView } from '../src/modules/audit/audit-query.ts'
import { bearer, createUser, NO_RATE_LIMITS, type Session, uniqueEmail } from './helpers/accounts.ts'
import { runCliWithEnv } from './helpers/run-cli.ts'
import { skipUnlessPostgres } from './helpers/services.ts'
import { TEST_MASTER_KEY } from './helpers/test-config.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'

const skip = await skipUnlessPostgres()
const PROBE = 'audit.probe'
const UA = 'admin-audit-test/1.0'

/** A job type whose payload may carry a secret (to see it masked in schedule diffs). */
const probeModule: PlinthModule = {
  name: 'audit-probe',
  jobs: () => [
    defineJob({
      name: PROBE,
      payload: Type.Object({ tag: Type.String(), apiToken: Type.Optional(Type.String()) }),
      handler() {},
    }),
  ],
}

const cli = runCliWithEnv

describe('administrators’ actions in the audit log, on PostgreSQL', { skip }, () => {
  let plinth: TestPlinth
  let admin: Session

  before(async () => {
    plinth = await startTestPlinth({
      backend: 'postgres',
      env: { ...NO_RATE_LIMITS, PLINTH_WEBHOOKS_ALLOW_PRIVATE: 'true', PLINTH_MASTER_KEY: TEST_MASTER_KEY },
      modules: [probeModule],
    })
    admin = await createUser(plinth, uniqueEmail('admin'), 'admin')
  })
  after(() => plinth?.close())

  const call = (
    method: 'GET' | 'POST' | 'PATCH' | 'DELETE',
    url: string,
    payload?: object,
    headers: Record<string, string> = bearer(admin.token),
  ) =>
    plinth.app.inject({
      method,
      url: `/api/v1${url}`,
      headers: { 'user-agent': UA, ...headers },
      ...(payload ? { payload } : {}),
    })

  /** The audit rows of a request (sealed first by the read), except the reads' own rows. */
  async function rowsOf(res: LightMyRequestResponse): Promise<AuditView[]> {
    const requestId = String(res.headers['x-request-id'])
    const list = await call('GET', `/audit?requestId=${encodeURIComponent(requestId)}`)
    assert.equal(list.statusCode, 200, list.body)
    return (list.json() as { entries: AuditView[] }).entries
  }

  /** The one row a successful admin request wrote: its action, the administrator, from this client. */
  async function rowOf(res: LightMyRequestResponse, action: string, status: number): Promise<AuditView> {
    assert.equal(res.statusCode, status, res.body)
    const rows = await rowsOf(res)
    assert.deepEqual(
      rows.map((r) => r.action),
      [action],
    )
    const row = rows[0]!
    assert.deepEqual(row.actor, { type: 'user', id: admin.userId, tokenId: null })
    assert.equal(row.outcome, 'success')
    assert.equal(row.ip, '127.0.0.1')
    assert.equal(row.userAgent, UA)
    assert.equal(row.requestId, String(res.headers['x-request-id']))
    return row
  }

  describe('jobs', () => {
    let jobId: string

    it('records an enqueue over HTTP (not the payload), and no row when an idempotency key matched', async () => {
      const body = {
        payload: { tag: 'one', apiToken: 'tok-enqueue-1' },
        delay: 600_000,
        idempotencyKey: 'k-1',
      }
      const res = await call('POST', `/jobs/${PROBE}`, body)
      jobId = (res.json() as { id: string }).id
      const row = await rowOf(res, 'job:enqueued', 202)
      assert.deepEqual(row.target, { type: 'job', id: jobId })
      assert.deepEqual(row.details, { name: PROBE, delayMs: 600_000, idempotencyKey: true })
      assert.doesNotMatch(JSON.stringify(row), /tok-enqueue-1/)

      const again = await call('POST', `/jobs/${PROBE}`, body)
      assert.equal(again.statusCode, 200, again.body)
      assert.deepEqual(await rowsOf(again), [])
    })

    it('names the API token that enqueued', async () => {
      const created = await call('POST', '/me/tokens', {
        name: 'ops bot',
        scopes: ['jobs:manage', 'jobs:read'],
      })
      assert.equal(created.statusCode, 201, created.body)
      const token = created.json() as { id: string; token: string }
      const res = await call(
        'POST',
        `/jobs/${PROBE}`,
        { payload: { tag: 'bot' }, delay: 600_000 },
        bearer(token.token),
      )
      assert.equal(res.statusCode, 202, res.body)
      const [row] = await rowsOf(res)
      assert.equal(row?.action, 'job:enqueued')
      assert.deepEqual(row?.actor, { type: 'token', id: admin.userId, tokenId: token.id })
    })

    it('records a cancel and a retry with the state the job was in', async () => {
      const cancelled = await rowOf(await call('POST', `/jobs/${jobId}/cancel`), 'job:cancelled', 200)
      assert.deepEqual(cancelled.target, { type: 'job', id: jobId })
      assert.deepEqual(cancelled.details, { name: PROBE, from: 'created' })
      const retried = await rowOf(await call('POST', `/jobs/${jobId}/retry`), 'job:retried', 200)
      assert.deepEqual(retried.details, { name: PROBE, from: 'cancelled' })
      assert.equal((await plinth.jobs.get(jobId)).state, 'created')
    })

    it('records purging and redriving a dead-letter queue, with how many jobs', async () => {
      const dead = deadLetterQueue(PROBE)
      for (const tag of ['d1', 'd2']) await plinth.jobs.boss.send(dead, { payload: { tag }, meta: {} })
      const purge = await call('DELETE', `/job-types/${PROBE}/dead-letter`)
      assert.deepEqual(purge.json(), { purged: 2 })
      const purged = await rowOf(purge, 'job:dead-letters-purged', 200)
      assert.deepEqual(purged.target, { type: 'job-type', id: PROBE })
      assert.deepEqual(purged.details, { queue: dead, purged: 2 })

      await plinth.jobs.boss.send(dead, { payload: { tag: 'd3' }, meta: {} })
      const redrive = await call('POST', `/job-types/${PROBE}/dead-letter/redrive`)
      assert.deepEqual(redrive.json(), { moved: 1 })
      const redriven = await rowOf(redrive, 'job:dead-letters-redriven', 200)
      assert.deepEqual(redriven.details, { queue: dead, moved: 1 })
    })
  })

  describe('schedules', () => {
    let id: string

    it('records a creation with what was created, secrets in the payload masked', async () => {
      const res = await call('POST', '/schedules', {
        jobName: PROBE,
        cron: '0 3 * * *',
        payload: { tag: 'nightly', apiToken: 'tok-schedule-1' },
        description: 'nightly probe',
      })
      id = (res.json() as { id: string }).id
      const row = await rowOf(res, 'schedule:created', 201)
      assert.deepEqual(row.target, { type: 'schedule', id })
      assert.deepEqual(row.details, {
        jobName: PROBE,
        cron: '0 3 * * *',
        timezone: 'UTC',
        payload: { tag: 'nightly', apiToken: '[redacted]' },
        missed: 'skip',
        paused: false,
        description: 'nightly probe',
      })
      assert.doesNotMatch(JSON.stringify(row), /tok-schedule-1/)
    })

    it('records an update as a before/after diff of the keys that changed, a changed secret masked', async () => {
      const res = await call('PATCH', `/schedules/${id}`, {
        cron: '0 4 * * *',
        payload: { tag: 'nightly', apiToken: 'tok-schedule-2' },
      })
      const row = await rowOf(res, 'schedule:updated', 200)
      assert.deepEqual(row.changes, {
        before: { cron: '0 3 * * *', payload: { tag: 'nightly', apiToken: '[redacted]' } },
        after: { cron: '0 4 * * *', payload: { tag: 'nightly', apiToken: '[redacted]' } },
      })
      assert.doesNotMatch(JSON.stringify(row), /tok-schedule-/)
    })

    it('records pause and resume (and nothing for a pause that changes nothing), then deletion', async () => {
      const paused = await rowOf(await call('POST', `/schedules/${id}/pause`), 'schedule:paused', 200)
      assert.deepEqual(paused.changes, { before: { paused: false }, after: { paused: true } })
      const again = await call('POST', `/schedules/${id}/pause`)
      assert.equal(again.statusCode, 200)
      assert.deepEqual(await rowsOf(again), [])
      const resumed = await rowOf(await call('POST', `/schedules/${id}/resume`), 'schedule:resumed', 200)
      assert.deepEqual(resumed.changes, { before: { paused: true }, after: { paused: false } })
      const deleted = await rowOf(await call('DELETE', `/schedules/${id}`), 'schedule:deleted', 204)
      assert.deepEqual(deleted.target, { type: 'schedule', id })
      assert.equal((deleted.details as { cron: string }).cron, '0 4 * * *')
    })
  })

  describe('webhooks', () => {
    const secret = `whsec-${randomBytes(12).toString('hex')}`
    let id: string

    it('records a subscription without its secret or the query of its URL', async () => {
      const res = await call('POST', '/webhooks', {
        url: 'http://127.0.0.1:9/hooks?token=url-secret-1',
        eventTypes: ['order.created'],
        secret,
        description: 'orders',
      })
      id = (res.json() as { id: string }).id
      const row = await rowOf(res, 'webhook:created', 201)
      assert.deepEqual(row.target, { type: 'webhook', id })
      assert.deepEqual(row.details, {
        origin: 'http://127.0.0.1:9',
        eventTypes: ['order.created'],
        description: 'orders',
        active: true,
      })
      assert.doesNotMatch(JSON.stringify(row), new RegExp(`${secret}|url-secret-1`))
    })

    it('records a change as a diff (a new URL as urlChanged), and a deletion', async () => {
      const res = await call('PATCH', `/webhooks/${id}`, {
        url: 'http://127.0.0.1:9/other?token=url-secret-2',
        active: false,
      })
      const row = await rowOf(res, 'webhook:updated', 200)
      assert.deepEqual(row.changes, {
        before: { active: true, urlChanged: false },
        after: { active: false, urlChanged: true },
      })
      assert.doesNotMatch(JSON.stringify(row), /url-secret-2/)
      await rowOf(await call('DELETE', `/webhooks/${id}`), 'webhook:deleted', 204)
    })
  })

  it('does not make a schedule change or a subscription whose audit row cannot be written', async () => {
    const db = plinth.db.kysely
    const created = await call('POST', '/schedules', {
      jobName: PROBE,
      cron: '0 5 * * *',
      payload: { tag: 'x' },
    })
    assert.equal(created.statusCode, 201, created.body)
    const { id } = created.json() as { id: string }
    const webhooksBefore = (await call('GET', '/webhooks')).json() as { webhooks: unknown[] }
    await sql`create function refuse_admin_audit() returns trigger language plpgsql as $$
      begin raise exception 'audit storage refused'; end $$`.execute(db)
    await sql`create trigger refuse_admin_audit before insert on audit_log for each row
      when (new.action in ('schedule:updated', 'webhook:created')) execute function refuse_admin_audit()`.execute(
      db,
    )
    try {
      assert.equal((await call('PATCH', `/schedules/${id}`, { cron: '0 6 * * *' })).statusCode, 500)
      const hook = await call('POST', '/webhooks', { url: 'http://127.0.0.1:9/x', eventTypes: ['a.b'] })
      assert.equal(hook.statusCode, 500)
    } finally {
      await sql`drop trigger refuse_admin_audit on audit_log`.execute(db)
      await sql`drop function refuse_admin_audit()`.execute(db)
    }
    const schedule = (await call('GET', `/schedules/${id}`)).json() as { cron: string }
    assert.equal(schedule.cron, '0 5 * * *', 'the schedule did not change')
    const copy = (await plinth.jobs.boss.getSchedules()).find((s) => s.key === id)
    assert.equal(copy?.cron, '0 5 * * *', "the job engine's copy was put back")
    const webhooksAfter = (await call('GET', '/webhooks')).json() as { webhooks: unknown[] }
    assert.equal(webhooksAfter.webhooks.length, webhooksBefore.webhooks.length, 'no subscription was created')
  })

  const cliEnv = () => ({
    PLINTH_ENV: 'test',
    PLINTH_LOG_LEVEL: 'silent',
    DATABASE_URL: String(plinth.config.databaseUrl),
    PLINTH_KEYS_REFRESH: '1s',
    PLINTH_MASTER_KEY: TEST_MASTER_KEY,
  })
  const assertCliActor = (row: AuditView | undefined) => {
    assert.deepEqual(row?.actor, { type: 'system', id: 'cli', tokenId: null })
    assert.match(String(row?.userAgent), /^plinth-cli\/\S+ \(.+\)$/)
  }

  it('records plinth schedules pause as the command-line operator', async () => {
    const list = await call('GET', '/schedules?jobName=plinth.heartbeat')
    const [heartbeat] = (list.json() as { schedules: { id: string }[] }).schedules
    assert.ok(heartbeat, list.body)
    const run = await cli(['schedules', 'pause', heartbeat.id], cliEnv())
    assert.equal(run.code, 0, run.err)
    const res = await call('GET', `/audit?action=schedule:paused&targetId=${heartbeat.id}`)
    const [row, ...more] = (res.json() as { entries: AuditView[] }).entries
    assert.deepEqual(more, [])
    assertCliActor(row)
    assert.deepEqual(row?.changes, { before: { paused: false }, after: { paused: true } })
  })

  it('records plinth keys rotate and rewrap as the command-line operator, in the changing transaction', async () => {
    const env = cliEnv()
    const previous = (
      await plinth.db.kysely
        .selectFrom('encryption_keys')
        .select('id')
        .where('state', '=', 'active')
        .executeTakeFirstOrThrow()
    ).id
    const rotate = await cli(['keys', 'rotate'], env)
    assert.equal(rotate.code, 0, rotate.err)
    const [, created] = /^new active key ([0-9a-f]{16})/m.exec(rotate.out) ?? []
    assert.ok(created, rotate.out)
    const newMaster = randomBytes(32).toString('base64')
    const rewrap = await cli(['keys', 'rewrap'], {
      ...env,
      PLINTH_MASTER_KEY: newMaster,
      PLINTH_MASTER_KEY_PREVIOUS: TEST_MASTER_KEY,
    })
    assert.equal(rewrap.code, 0, rewrap.err)

    const list = await call('GET', '/audit?action=key:*&limit=50')
    const rows = (list.json() as { entries: AuditView[] }).entries.reverse()
    for (const row of rows) {
      assertCliActor(row)
      assert.equal(row.target.type, 'encryption-key')
    }
    const rotated = rows.find((r) => r.action === 'key:rotated')
    assert.equal(rotated?.target.id, created)
    assert.deepEqual(rotated?.details, { previous })
    const retired = rows.filter((r) => r.action === 'key:retired').map((r) => r.target.id)
    assert.ok(retired.includes(previous), `the previous key was retired: ${JSON.stringify(rows)}`)
    const rewrapped = rows.filter((r) => r.action === 'key:rewrapped').map((r) => r.target.id)
    assert.ok(rewrapped.includes(created), 'the active key was re-wrapped')
    assert.ok(
      rows.findIndex((r) => r.action === 'key:rotated') < rows.findIndex((r) => r.action === 'key:rewrapped'),
    )
  })
})
