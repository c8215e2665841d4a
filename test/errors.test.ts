import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { Type } from 'typebox'
import { defineJob } from '../src/core/jobs.ts'
import type { PlinthModule } from '../src/core/module.ts'
import { errorNameOf, fingerprintOf, normaliseFrames } from '../src/modules/errors/fingerprint.ts'
import { PlinthError } from '../src/shared/errors.ts'
import { bearer, createUser, NO_RATE_LIMITS, type Session, uniqueEmail, waitFor } from './helpers/accounts.ts'
import { assertProblem } from './helpers/assert-problem.ts'
import { captureLogs } from './helpers/log-capture.ts'
import { testConfig } from './helpers/test-config.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'

interface Group {
  id: string
  fingerprint: string
  source: string
  location: string
  name: string
  message: string
  frames: string[]
  count: number
  firstSeen: string
  lastSeen: string
  sampleRequestId: string | null
  sampleTraceId: string | null
  status: string
  newSinceDeploy: boolean
}

const EXPLODE_JOB = 'test.explode'

/** Routes and a job that fail the ways production code does. */
const faultyModule: PlinthModule = {
  name: 'faulty',
  routes(api) {
    api.get('/faulty/boom/:n', { config: { public: true } }, async (request) => {
      const { n } = request.params as { n: string }
      // A bug: reading a property of undefined, with a message that differs per call.
      const things: Record<string, { name: string }> = {}
      return { name: (things[n] as { name: string }).name }
    })
    api.get('/faulty/refuse', { config: { public: true } }, async () => {
      throw new PlinthError('PLINTH_HTTP_NOT_FOUND')
    })
  },
  jobs: () => [
    defineJob({
      name: EXPLODE_JOB,
      payload: Type.Object({ n: Type.Number() }),
      policy: { retryLimit: 0 },
      handler: ({ payload }) => {
        throw new RangeError(`payload ${payload.n} out of range`)
      },
    }),
  ],
}

describe('error tracking', () => {
  const config = testConfig({ ...NO_RATE_LIMITS, PLINTH_JOBS_POLL_INTERVAL: '500ms' })
  const logs = captureLogs(config, 'debug')
  let plinth: TestPlinth
  let admin: Session
  let member: Session

  const list = async (query = '', who = admin) => {
    const res = await plinth.app.inject({
      method: 'GET',
      url: `/api/v1/admin/errors${query}`,
      headers: bearer(who.token),
    })
    assert.equal(res.statusCode, 200, res.body)
    return res.json() as { deploy: { version: string; startedAt: string }; items: Group[] }
  }
  const groupAt = (location: string, count = 1) =>
    waitFor(`an error group at ${location} counting ${count}`, async () => {
      const g = (await list()).items.find((i) => i.location === location)
      return g && g.count >= count ? g : undefined
    })
  const patch = (id: string, status: string, who = admin) =>
    plinth.app.inject({
      method: 'PATCH',
      url: `/api/v1/admin/errors/${id}`,
      headers: bearer(who.token),
      payload: { status },
    })

  before(async () => {
    plinth = await startTestPlinth({ config, logger: logs.logger, modules: [faultyModule] })
    admin = await createUser(plinth, uniqueEmail('admin'), 'admin')
    member = await createUser(plinth, uniqueEmail('member'), 'member')
  })
  after(() => plinth?.close())

  it('groups 500s of one fault by fingerprint, with count, first and last seen and the latest request id', async () => {
    const first = await plinth.app.inject('/api/v1/faulty/boom/1')
    assert.equal(first.statusCode, 500)
    const second = await plinth.app.inject('/api/v1/faulty/boom/2')
    assert.equal(second.statusCode, 500)
    const g = await groupAt('GET /api/v1/faulty/boom/:n', 2)
    assert.equal(g.count, 2)
    assert.equal(g.source, 'http')
    assert.equal(g.name, 'TypeError')
    assert.match(g.message, /name/)
    assert.equal(g.sampleRequestId, second.headers['x-request-id'])
    assert.equal(g.status, 'open')
    assert.equal(g.newSinceDeploy, true)
    assert.ok(
      g.frames.length > 0 && g.frames.every((f) => !/:\d+/.test(f)),
      `frames without positions: ${g.frames}`,
    )
    assert.ok(Date.parse(g.firstSeen) <= Date.parse(g.lastSeen))
    const one = await plinth.app.inject({ url: `/api/v1/admin/errors/${g.id}`, headers: bearer(admin.token) })
    assert.equal(one.json().fingerprint, g.fingerprint)
  })

  it('does not record designed refusals (4xx)', async () => {
    const res = await plinth.app.inject('/api/v1/faulty/refuse')
    assert.equal(res.statusCode, 404)
    // A later 500 is recorded, so by the time it shows the refusal would have been flushed with it.
    await plinth.app.inject('/api/v1/faulty/boom/3')
    await groupAt('GET /api/v1/faulty/boom/:n', 3)
    assert.equal((await list()).items.filter((i) => i.location.includes('refuse')).length, 0)
  })

  it('records a job that failed its last attempt, with the enqueuing request id', async () => {
    await plinth.jobs.enqueue(EXPLODE_JOB, { n: 7 }, { requestId: 'req-explode-1' })
    const g = await groupAt(EXPLODE_JOB, 1)
    assert.equal(g.source, 'job')
    assert.equal(g.name, 'RangeError')
    assert.equal(g.message, 'payload 7 out of range')
    assert.equal(g.sampleRequestId, 'req-explode-1')
  })

  it('stores an error message with its secrets masked: URL passwords and Plinth tokens', async () => {
    const token = `plt_${'q'.repeat(43)}`
    plinth.context.errorReports.report({
      error: new Error(`upstream https://svc:upstream-pass@api.example/v1 refused ${token}`),
      source: 'process',
      where: 'secret-test',
    })
    await plinth.context.errorReports.settle(5000)
    const g = (await list()).items.find((i) => i.location === 'secret-test')
    assert.equal(g?.message, 'upstream https://svc:[redacted]@api.example/v1 refused [redacted]')
  })

  it('records a process-level error reported at once (before the process exits)', async () => {
    plinth.context.errorReports.report({
      error: new Error('the event loop saw this one'),
      source: 'process',
      where: 'uncaughtException',
    })
    await plinth.context.errorReports.settle(5000)
    // settle() waited for the write: no polling needed.
    const g = (await list()).items.find((i) => i.location === 'uncaughtException')
    assert.equal(g?.source, 'process')
    assert.equal(g?.message, 'the event loop saw this one')
  })

  it('resolves, reopens a resolved group when it recurs, and mutes (which keeps counting)', async () => {
    const g = await groupAt('GET /api/v1/faulty/boom/:n')
    const resolved = await patch(g.id, 'resolved')
    assert.equal(resolved.statusCode, 200, resolved.body)
    assert.equal(resolved.json().status, 'resolved')
    assert.equal(
      (await list('?status=resolved')).items.some((i) => i.id === g.id),
      true,
    )
    assert.equal(
      (await list('?status=open')).items.some((i) => i.id === g.id),
      false,
    )

    await plinth.app.inject('/api/v1/faulty/boom/4')
    const again = await waitFor('the group to reopen', async () => {
      const now = (await list()).items.find((i) => i.id === g.id)
      return now?.status === 'open' ? now : undefined
    })
    assert.ok(again.count > g.count)

    const muted = await patch(g.id, 'muted')
    assert.equal(muted.json().status, 'muted')
    await plinth.app.inject('/api/v1/faulty/boom/5')
    const still = await groupAt('GET /api/v1/faulty/boom/:n', again.count + 1)
    assert.equal(still.status, 'muted', 'a muted group stays muted')

    const audit = await plinth.db.kysely
      .selectFrom('audit_log')
      .select('action')
      .where('target_id', '=', g.id)
      .orderBy('seq')
      .execute()
    assert.deepEqual(
      audit.map((a) => a.action),
      ['error-group:resolved', 'error-group:muted'],
    )
  })

  it('tells groups new since the running version started from older ones', async () => {
    const before = (await list()).items
    assert.ok(before.length > 0 && before.every((i) => i.newSinceDeploy))
    // A deploy: the next version's first start is recorded after every group was first seen.
    const { deploy } = await list()
    await plinth.db.kysely
      .updateTable('error_deploys')
      .set({ started_at: new Date(Date.now() + 60_000) })
      .where('version', '=', deploy.version)
      .execute()
    const after = await list()
    assert.ok(after.items.every((i) => !i.newSinceDeploy))
    assert.equal((await list('?newSinceDeploy=true')).items.length, 0)
  })

  it('needs errors:read to list and errors:manage to change; an unknown id is 404', async () => {
    const res = await plinth.app.inject({ url: '/api/v1/admin/errors', headers: bearer(member.token) })
    assertProblem(res, 403, 'PLINTH_AUTH_FORBIDDEN')
    const unknown = await patch('00000000-0000-4000-8000-000000000000', 'resolved')
    assertProblem(unknown, 404, 'PLINTH_ERROR_GROUP_NOT_FOUND')
    const bad = await patch('00000000-0000-4000-8000-000000000000', 'forgotten')
    assertProblem(bad, 422, 'PLINTH_HTTP_VALIDATION_FAILED')
  })

  it('counts unexpected errors by source at /api/metrics', async () => {
    const res = await plinth.app.inject('/api/metrics')
    assert.equal(res.statusCode, 200)
    assert.match(res.body, /^plinth_errors_total\{source="http"\} [1-9]\d*$/m)
    assert.match(res.body, /^plinth_errors_total\{source="job"\} [1-9]\d*$/m)
    assert.match(
      res.body,
      /^plinth_users_registered_total\{via="administrator"\} 2$/m,
      'the admin and the member',
    )
    assert.match(res.body, /^plinth_sessions_active [1-9]\d*$/m)
  })

  it('every report reached every listener (none failed)', () => {
    const failed = logs.lines().filter((l) => l.msg === 'an error report could not be recorded')
    assert.deepEqual(failed, [])
  })
})

describe('error fingerprints', () => {
  const at = (fn: string, file: string, line: number) => `    at ${fn} (${file}:${line}:${line % 17})`
  const stack = (line: number, root = '/srv/plinth') =>
    [
      'TypeError: Cannot read properties of undefined',
      at('loadThing', `file://${root}/src/modules/things/things.service.ts`, line),
      at('async Object.handler', `${root}/src/modules/things/things.routes.ts`, line + 3),
      '    at node:internal/process/task_queues:105:5',
      at('Object.query', `${root}/node_modules/pg/lib/client.js`, 200),
    ].join('\n')

  it('drops positions and the install path, keeps functions, files and packages', () => {
    assert.deepEqual(normaliseFrames(stack(10)), [
      'loadThing (src/modules/things/things.service.ts)',
      'Object.handler (src/modules/things/things.routes.ts)',
      'Object.query (node_modules/pg/lib/client.js)',
    ])
  })

  it('is the same across line shifts and machines, and differs by place and type', () => {
    const e = (s: string, Type: ErrorConstructor = TypeError) => Object.assign(new Type('x'), { stack: s })
    const a = fingerprintOf(e(stack(10)), 'GET /things/:id')
    assert.equal(fingerprintOf(e(stack(99, '/home/ci/build')), 'GET /things/:id'), a)
    assert.notEqual(fingerprintOf(e(stack(10)), 'POST /things'), a)
    assert.notEqual(fingerprintOf(e(stack(10), RangeError), 'GET /things/:id'), a)
    assert.equal(errorNameOf(Object.assign(new Error('x'), { code: 'ECONNRESET' })), 'Error ECONNRESET')
    assert.equal(errorNameOf('a string'), 'string')
  })
})
