import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { after, before, describe, it } from 'node:test'
import { sql } from 'kysely'
import { bearer, createUser, NO_RATE_LIMITS, type Session, uniqueEmail, waitFor } from './helpers/accounts.ts'
import { assertProblem } from './helpers/assert-problem.ts'
import { jobsKit } from './helpers/jobs-kit.ts'
import { captureLogs } from './helpers/log-capture.ts'
import { checkMetrics, skipUnlessPromtool } from './helpers/promtool.ts'
import { testConfig } from './helpers/test-config.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'

const promtoolSkip = await skipUnlessPromtool()

describe('jobs on the embedded database', () => {
  const kit = jobsKit()
  const config = testConfig({ ...NO_RATE_LIMITS, PLINTH_JOBS_POLL_INTERVAL: '500ms' })
  const logs = captureLogs(config, 'info')
  let plinth: TestPlinth
  let admin: Session
  let member: Session
  let operator: Session

  before(async () => {
    plinth = await startTestPlinth({ config, logger: logs.logger, modules: [kit.module] })
    admin = await createUser(plinth, uniqueEmail('admin'), 'admin')
    member = await createUser(plinth, uniqueEmail('member'), 'member')
    operator = await createUser(plinth, uniqueEmail('operator'), 'operator')
  })
  after(() => plinth?.close())

  const api = (method: 'GET' | 'POST' | 'PATCH' | 'DELETE', url: string, body?: unknown, who = admin) =>
    plinth.app.inject({
      method,
      url: `/api/v1${url}`,
      headers: bearer(who.token),
      ...(body === undefined ? {} : { payload: body as object }),
    })

  const settled = (id: string, states = ['completed', 'failed', 'cancelled']) =>
    waitFor(`job ${id} to settle`, async () => {
      const job = await plinth.jobs.get(id)
      return states.includes(job.state) ? job : undefined
    })

  it('enqueues over HTTP, runs the job, and shows it with its request id and output', async () => {
    const res = await api('POST', '/jobs/kit.record', { payload: { tag: 'hello' } })
    assert.equal(res.statusCode, 202, res.body)
    const { id, created } = res.json()
    assert.equal(created, true)
    const job = await settled(id)
    assert.equal(job.state, 'completed')
    assert.deepEqual(job.output, { tag: 'hello' })
    assert.equal(job.requestId, res.headers['x-request-id'])
    const shown = await api('GET', `/jobs/${id}`, undefined, operator)
    assert.equal(shown.statusCode, 200)
    assert.equal(shown.json().attempts, 1)
    assert.deepEqual(shown.json().payload, { tag: 'hello' })
    assert.ok(shown.json().startedAt && shown.json().completedAt)
    // every log line of the attempt carries the job id and the request id
    const lines = logs.lines().filter((l) => l.jobId === id)
    assert.ok(lines.length >= 2, 'expected the handler line and the completion line')
    for (const line of lines) assert.equal(line.requestId, res.headers['x-request-id'])
  })

  it('enqueues inside a transaction on the single embedded connection (backpressure counted through it)', async () => {
    const id = await plinth.db.kysely.transaction().execute(async (trx) => {
      const r = await plinth.jobs.enqueue('kit.record', { tag: 'in-tx' }, { db: trx })
      return r.id
    })
    plinth.jobs.wake('kit.record')
    assert.equal((await settled(id)).state, 'completed')
  })

  it('refuses a payload that does not match the schema, naming the field, and creates nothing', async () => {
    const before = (await plinth.jobs.list({ name: 'kit.record', limit: 200 })).items.length
    const res = await api('POST', '/jobs/kit.record', { payload: { tag: 7, extra: true } })
    const body = assertProblem(res, 422, 'PLINTH_JOB_PAYLOAD_INVALID')
    const fields = (body.errors as { field: string }[]).map((e) => e.field).sort()
    assert.deepEqual(fields, ['payload.extra', 'payload.tag'])
    assert.equal((await plinth.jobs.list({ name: 'kit.record', limit: 200 })).items.length, before)
    assertProblem(await api('POST', '/jobs/kit.nope', { payload: {} }), 404, 'PLINTH_JOB_TYPE_UNKNOWN')
    assertProblem(await api('POST', '/jobs/Bad Name', { payload: {} }), 400, 'PLINTH_HTTP_INVALID_REQUEST')
    assertProblem(
      await api('POST', '/jobs/kit.record', { payload: { tag: 'x' }, delay: -1 }),
      422,
      'PLINTH_HTTP_VALIDATION_FAILED',
    )
  })

  it('returns the existing job for a repeated idempotency key (body or header)', async () => {
    const first = await api('POST', '/jobs/kit.record', {
      payload: { tag: 'once' },
      idempotencyKey: 'order-42',
    })
    const again = await api('POST', '/jobs/kit.record', {
      payload: { tag: 'once' },
      idempotencyKey: 'order-42',
    })
    assert.equal(first.statusCode, 202)
    assert.equal(again.statusCode, 200)
    assert.equal(again.json().id, first.json().id)
    assert.equal(again.json().created, false)
    const viaHeader = await plinth.app.inject({
      method: 'POST',
      url: '/api/v1/jobs/kit.record',
      headers: { ...bearer(admin.token), 'idempotency-key': 'order-42' },
      payload: { payload: { tag: 'once' } },
    })
    assert.equal(viaHeader.json().id, first.json().id)
    // the key is per job type
    const other = await plinth.jobs.enqueue('kit.bounded', {}, { idempotencyKey: 'order-42' })
    assert.notEqual(other.id, first.json().id)
    await settled(first.json().id)
    assert.equal(kit.of(first.json().id).length, 1, 'the job ran once')
  })

  it('enqueues at POST /job-types/{name}/jobs, the same operation as the deprecated POST /jobs/{name}', async () => {
    const created = await api('POST', '/job-types/kit.record/jobs', {
      payload: { tag: 'by type' },
      idempotencyKey: 'by-type-1',
    })
    assert.equal(created.statusCode, 202, created.body)
    // One operation under two paths: the idempotency key is shared between them.
    const old = await api('POST', '/jobs/kit.record', {
      payload: { tag: 'by type' },
      idempotencyKey: 'by-type-1',
    })
    assert.equal(old.statusCode, 200, old.body)
    assert.equal(old.json().id, created.json().id)
    assert.equal((await settled(created.json().id)).state, 'completed')
    assertProblem(
      await api('POST', '/job-types/kit.nope/jobs', { payload: {} }),
      404,
      'PLINTH_JOB_TYPE_UNKNOWN',
    )
    assertProblem(
      await api('POST', '/job-types/kit.record/jobs', { payload: { tag: 7 } }),
      422,
      'PLINTH_JOB_PAYLOAD_INVALID',
    )
    const doc = (await plinth.app.inject({ url: '/api/openapi.json' })).json()
    assert.equal(doc.paths['/api/v1/job-types/{name}/jobs'].post.deprecated, undefined)
    assert.equal(doc.paths['/api/v1/jobs/{name}'].post.deprecated, true)
    assert.equal(doc.paths['/api/v1/jobs/{name}'].post.operationId, 'postJobsByName', 'unchanged for clients')
  })

  it('answers 4xx with the reason, not 503, for a job PostgreSQL cannot store (issue 9, defect 4)', async () => {
    // An idempotency key too large for its index (random: a repetitive one compresses to fit), the
    // same on every retry, so no 503.
    const longKey = await plinth.app.inject({
      method: 'POST',
      url: '/api/v1/jobs/kit.record',
      headers: { ...bearer(admin.token), 'idempotency-key': randomBytes(4000).toString('hex') },
      payload: { payload: { tag: 'long key' } },
    })
    const body = assertProblem(longKey, 422, 'PLINTH_JOB_INPUT_INVALID')
    assert.match(String(body.detail), /too large/)
    assert.equal(longKey.headers['retry-after'], undefined)
    // Data jsonb refuses, enqueued by a module (HTTP refuses it at the edge): 422, not 503.
    await assert.rejects(plinth.jobs.enqueue('kit.record', { tag: 'nul \u0000 here' }), (err: Error) => {
      assert.equal((err as { code?: string }).code, 'PLINTH_JOB_INPUT_INVALID')
      assert.match(err.message, /NUL/)
      return true
    })
    await assert.rejects(
      plinth.jobs.enqueue('kit.record', { tag: 'lone \ud800 surrogate' }, { idempotencyKey: 'lone-1' }),
      (err: Error) => (err as { code?: string }).code === 'PLINTH_JOB_INPUT_INVALID',
    )
    // …and through the HTTP edge, a NUL in the payload is refused before the engine.
    const nul = await api('POST', '/jobs/kit.record', { payload: { tag: 'a\u0000b' } })
    const edge = assertProblem(nul, 400, 'PLINTH_HTTP_INVALID_TEXT')
    assert.deepEqual(edge.errors, [
      { in: 'body', field: 'payload.tag', message: 'holds a NUL character or an unpaired surrogate' },
    ])
  })

  it('retries a failing job with backoff until it succeeds, recording the last error meanwhile', async () => {
    const { id } = await plinth.jobs.enqueue('kit.flaky', { failTimes: 2 }, { requestId: 'req-flaky' })
    const retrying = await waitFor('the first failure', async () => {
      const job = await plinth.jobs.get(id)
      return job.state === 'retry' ? job : undefined
    })
    assert.equal(retrying.lastError, 'planned failure 1')
    const job = await settled(id)
    assert.equal(job.state, 'completed')
    assert.equal(job.attempts, 3)
    const runs = kit.of(id)
    assert.deepEqual(
      runs.map((r) => r.attempt),
      [1, 2, 3],
    )
    // retryDelay 1 s with exponential backoff: ≥ 1 s before the first retry, ≥ 2 s before the second
    const gaps = runs.slice(1).map((r, i) => r.at - (runs[i] as { at: number }).at)
    assert.ok((gaps[0] ?? 0) >= 900, `first retry after ${gaps[0]} ms`)
    assert.ok((gaps[1] ?? 0) >= 1900, `second retry after ${gaps[1]} ms`)
    for (const r of runs) assert.equal(r.requestId, 'req-flaky')
    const lines = logs.lines().filter((l) => l.jobId === id)
    assert.deepEqual([...new Set(lines.map((l) => l.attempt))].sort(), [1, 2, 3])
    for (const l of lines) assert.equal(l.requestId, 'req-flaky', JSON.stringify(l))
  })

  it('dead-letters a job that fails every attempt; the queue can be redriven and purged', async () => {
    const { id } = await plinth.jobs.enqueue('kit.doomed', {})
    const job = await settled(id)
    assert.equal(job.state, 'failed')
    assert.equal(job.lastError, 'doomed to fail')
    assert.equal(kit.of(id).length, 2, 'first attempt and one retry')
    const dead = await waitFor('the dead-letter copy', async () => {
      const page = await plinth.jobs.list({ name: 'kit.doomed.dead' })
      return page.items.find((j) => j.source?.id === id)
    })
    assert.deepEqual(dead.payload, {})
    const types = (await api('GET', '/job-types')).json().jobTypes as { name: string; deadLettered: number }[]
    assert.ok((types.find((t) => t.name === 'kit.doomed')?.deadLettered ?? 0) >= 1)

    const redriven = await api('POST', '/job-types/kit.doomed/dead-letter/redrive')
    assert.equal(redriven.statusCode, 200)
    assert.ok(redriven.json().moved >= 1)
    await waitFor(
      'the redriven job to fail again',
      async () => kit.attempts.filter((a) => a.name === 'kit.doomed').length >= 4,
    )

    await waitFor(
      'a new dead letter',
      async () => (await plinth.jobs.list({ name: 'kit.doomed.dead', state: 'created' })).items.length > 0,
    )
    const purged = await api('DELETE', '/job-types/kit.doomed/dead-letter')
    assert.equal(purged.statusCode, 200)
    assert.ok(purged.json().purged >= 1)
    assert.equal((await plinth.jobs.list({ name: 'kit.doomed.dead', state: 'created' })).items.length, 0)
    // a failed job can be retried by hand
    const retried = await api('POST', `/jobs/${id}/retry`)
    assert.equal(retried.statusCode, 200, retried.body)
    assert.ok(['created', 'retry', 'active', 'failed'].includes(retried.json().state))
  })

  it('cancels a waiting job, refuses to cancel a finished one, and runs a cancelled one on retry', async () => {
    const { id } = await plinth.jobs.enqueue('kit.record', { tag: 'later' }, { delay: 60_000 })
    const cancelled = await api('POST', `/jobs/${id}/cancel`)
    assert.equal(cancelled.statusCode, 200)
    assert.equal(cancelled.json().state, 'cancelled')
    assertProblem(await api('POST', `/jobs/${id}/cancel`), 409, 'PLINTH_JOB_STATE_CONFLICT')
    const done = await plinth.jobs.enqueue('kit.record', { tag: 'now' })
    await settled(done.id)
    assertProblem(await api('POST', `/jobs/${done.id}/cancel`), 409, 'PLINTH_JOB_STATE_CONFLICT')
    assertProblem(await api('POST', `/jobs/${done.id}/retry`), 409, 'PLINTH_JOB_STATE_CONFLICT')
    assertProblem(await api('GET', '/jobs/00000000-0000-0000-0000-000000000000'), 404, 'PLINTH_JOB_NOT_FOUND')
    assertProblem(await api('POST', '/jobs/not-a-uuid/cancel'), 404, 'PLINTH_JOB_NOT_FOUND')
    // resuming the cancelled job runs it (its delay still applies, so move it: cancel → retry → runs later)
    const resumed = await api('POST', `/jobs/${id}/retry`)
    assert.equal(resumed.statusCode, 200)
    assert.equal(resumed.json().state, 'created')
  })

  it('aborts the handler signal when an attempt runs past its timeout', async () => {
    const { id } = await plinth.jobs.enqueue('kit.slow', { ms: 10_000 })
    const job = await settled(id)
    assert.equal(job.state, 'failed')
    const [attempt] = kit.of(id)
    assert.ok(attempt?.aborted, 'the handler saw its signal abort')
  })

  it('answers 503 with Retry-After when a queue holds its maximum of waiting jobs', async () => {
    for (let i = 0; i < 3; i++) await plinth.jobs.enqueue('kit.bounded', {}, { delay: 60_000 })
    const full = await api('POST', '/jobs/kit.bounded', { payload: {}, delay: 60_000 })
    const body = assertProblem(full, 503, 'PLINTH_JOB_QUEUE_FULL')
    assert.ok(Number(full.headers['retry-after']) >= 1)
    assert.ok(body.detail)
    const forced = await api('POST', '/jobs/kit.bounded', { payload: {}, delay: 60_000, overflow: 'accept' })
    assert.equal(forced.statusCode, 202)
  })

  it('lists jobs by name and state, newest first, with a cursor', async () => {
    const ids: string[] = []
    for (let i = 0; i < 5; i++) ids.push((await plinth.jobs.enqueue('kit.record', { tag: `page-${i}` })).id)
    for (const id of ids) await settled(id)
    const first = await api('GET', '/jobs?name=kit.record&state=completed&limit=2', undefined, operator)
    assert.equal(first.statusCode, 200)
    const page1 = first.json()
    assert.equal(page1.jobs.length, 2)
    assert.ok(page1.nextCursor)
    const second = (
      await api('GET', `/jobs?name=kit.record&state=completed&limit=2&cursor=${page1.nextCursor}`)
    ).json()
    const seen = [...page1.jobs, ...second.jobs].map((j: { id: string }) => j.id)
    assert.equal(new Set(seen).size, 4, 'pages do not overlap')
    const all = [...page1.jobs, ...second.jobs] as { createdAt: string; name: string; state: string }[]
    for (const j of all) assert.equal(j.name, 'kit.record')
    for (let i = 1; i < all.length; i++)
      assert.ok(
        (all[i - 1] as { createdAt: string }).createdAt >= (all[i] as { createdAt: string }).createdAt,
      )
    const future = (await api('GET', `/jobs?from=${new Date(Date.now() + 60_000).toISOString()}`)).json()
    assert.equal(future.jobs.length, 0)
    assertProblem(await api('GET', '/jobs?cursor=bogus'), 400, 'PLINTH_HTTP_INVALID_REQUEST')
    assertProblem(await api('GET', '/jobs?state=sleeping'), 400, 'PLINTH_HTTP_INVALID_REQUEST')
  })

  it("never lists pg-boss' internal queues (__pgboss__send-it …)", async () => {
    // The queue cron ticks go through: present in pg-boss' table on every worker.
    await sql`insert into plinth_jobs.job (name, data) values ('__pgboss__send-it', '{}'::jsonb)`.execute(
      plinth.db.kysely,
    )
    const { rows } = await sql<{ n: number }>`select count(*)::int as n from plinth_jobs.job
      where name = '__pgboss__send-it'`.execute(plinth.db.kysely)
    assert.ok((rows[0]?.n ?? 0) > 0)
    const listed = (await api('GET', '/jobs?limit=200')).json().jobs as { name: string }[]
    assert.deepEqual(
      listed.filter((j) => j.name.startsWith('__pgboss')),
      [],
    )
    assert.equal((await api('GET', '/jobs?name=__pgboss__send-it')).json().jobs.length, 0)
  })

  it('keeps jobs behind permissions: members cannot read or enqueue, operators can', async () => {
    assertProblem(await api('GET', '/jobs', undefined, member), 403, 'PLINTH_AUTH_FORBIDDEN')
    assertProblem(
      await api('POST', '/jobs/kit.record', { payload: { tag: 'x' } }, member),
      403,
      'PLINTH_AUTH_FORBIDDEN',
    )
    assertProblem(await api('GET', '/schedules', undefined, member), 403, 'PLINTH_AUTH_FORBIDDEN')
    const anonymous = await plinth.app.inject({ method: 'GET', url: '/api/v1/jobs' })
    assertProblem(anonymous, 401, 'PLINTH_AUTH_REQUIRED')
    assert.equal((await api('GET', '/job-types', undefined, operator)).statusCode, 200)
  })

  it('manages schedules: create, fire, pause, resume, update, delete', async () => {
    const created = await api('POST', '/schedules', {
      jobName: 'kit.record',
      cron: '* * * * *',
      payload: { tag: 'tick' },
      description: 'every minute',
    })
    assert.equal(created.statusCode, 201, created.body)
    const schedule = created.json()
    assert.equal(schedule.nextRuns.length, 3)
    assert.equal(schedule.timezone, 'UTC')
    const ticks = () => kit.attempts.filter((a) => a.scheduleId === schedule.id)
    await waitFor('a tick', async () => ticks().length > 0, { timeoutMs: 15_000 })
    assert.deepEqual(ticks()[0]?.payload, { tag: 'tick' })

    const paused = await api('POST', `/schedules/${schedule.id}/pause`)
    assert.equal(paused.json().paused, true)
    assert.deepEqual(paused.json().nextRuns, [])
    const copies = await plinth.jobs.boss.getSchedules('kit.record')
    assert.ok(!copies.some((c) => c.key === schedule.id), 'a paused schedule has no engine copy')

    const resumed = await api('POST', `/schedules/${schedule.id}/resume`)
    assert.equal(resumed.json().paused, false)
    const patched = await api('PATCH', `/schedules/${schedule.id}`, {
      cron: '0 3 * * *',
      timezone: 'Europe/Paris',
    })
    assert.equal(patched.statusCode, 200, patched.body)
    assert.equal(patched.json().timezone, 'Europe/Paris')
    const copy = await plinth.jobs.boss.getSchedule('kit.record', schedule.id)
    assert.equal(copy?.cron, '0 3 * * *')
    assert.equal(copy?.timezone, 'Europe/Paris')
    const listed = (await api('GET', '/schedules?jobName=kit.record', undefined, operator)).json().schedules
    assert.ok(listed.some((s: { id: string }) => s.id === schedule.id))

    assert.equal((await api('DELETE', `/schedules/${schedule.id}`)).statusCode, 204)
    assertProblem(await api('GET', `/schedules/${schedule.id}`), 404, 'PLINTH_SCHEDULE_NOT_FOUND')
    assert.equal(await plinth.jobs.boss.getSchedule('kit.record', schedule.id), null)
  })

  it('refuses invalid schedules with a clear error', async () => {
    const bad = async (body: Record<string, unknown>, status: number, code: string) =>
      assertProblem(
        await api('POST', '/schedules', { jobName: 'kit.record', payload: { tag: 'x' }, ...body }),
        status,
        code,
      )
    await bad({ cron: '* * * *  ' }, 422, 'PLINTH_SCHEDULE_INVALID')
    await bad({ cron: '* * * * * * *' }, 422, 'PLINTH_SCHEDULE_INVALID')
    await bad({ cron: '61 * * * *' }, 422, 'PLINTH_SCHEDULE_INVALID')
    await bad({ cron: '*/10 * * * * *' }, 422, 'PLINTH_SCHEDULE_INVALID')
    await bad({ cron: '* * * * *', timezone: 'Mars/Olympus' }, 422, 'PLINTH_SCHEDULE_INVALID')
    await bad({ cron: '* * * * *', payload: { tag: 3 } }, 422, 'PLINTH_JOB_PAYLOAD_INVALID')
    await bad({ cron: '* * * * *', jobName: 'kit.unknown' }, 404, 'PLINTH_JOB_TYPE_UNKNOWN')
    assertProblem(
      await api('PATCH', '/schedules/nope', { cron: '* * * * *' }),
      404,
      'PLINTH_SCHEDULE_NOT_FOUND',
    )
    const names = (await plinth.context.schedules.list()).map((s) => s.jobName)
    assert.deepEqual(names, ['plinth.heartbeat', 'plinth.retention'], 'nothing was half-created')
  })

  it('reports the heartbeat on /health and the job metrics on /api/metrics', async (t) => {
    const before = await plinth.app.inject({ method: 'GET', url: '/health' })
    assert.ok(['up', 'degraded'].includes(before.json().components.jobs.status))
    await plinth.jobs.enqueue('plinth.heartbeat', {})
    const health = await waitFor('the heartbeat', async () => {
      const res = await plinth.app.inject({ method: 'GET', url: '/health' })
      const jobs = res.json().components.jobs
      return jobs.details.lastHeartbeat ? jobs : undefined
    })
    assert.equal(health.status, 'up')
    const metrics = (await plinth.app.inject({ method: 'GET', url: '/api/metrics' })).body
    assert.match(metrics, /plinth_jobs_completed_total\{name="kit.record"\} [1-9]/)
    assert.match(metrics, /plinth_jobs_retried_total\{name="kit.flaky"\} 2/)
    assert.match(metrics, /plinth_jobs_dead_lettered_total\{name="kit.doomed"\} [1-9]/)
    assert.match(metrics, /plinth_job_duration_seconds_bucket\{.*name="kit.record"/)
    assert.match(metrics, /plinth_job_queue_waiting\{name="kit.bounded"\} [1-9]/)
    assert.match(metrics, /plinth_job_queue_oldest_waiting_seconds\{name="kit.bounded"\} /)
    assert.match(metrics, /plinth_schedules_created_total\{name="kit.record"\} 1/)
    assert.match(metrics, /plinth_schedules_fired_total\{name="kit.record"\} [1-9]/)
    if (promtoolSkip) return t.skip(promtoolSkip)
    const result = await checkMetrics(metrics)
    assert.equal(result.output.trim(), '', `promtool reported:\n${result.output}`)
    assert.equal(result.code, 0)
  })
})

describe('the jobs health check', () => {
  it('turns degraded when no heartbeat completed within the maximum age', async () => {
    const plinth = await startTestPlinth({ env: { PLINTH_JOBS_HEARTBEAT_MAX_AGE: '1ms' } })
    try {
      const res = await plinth.app.inject({ method: 'GET', url: '/health' })
      assert.equal(res.json().components.jobs.status, 'degraded')
      assert.equal(res.json().status, 'degraded')
    } finally {
      await plinth.close()
    }
  })
})
