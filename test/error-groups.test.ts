import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { Kysely, PostgresDialect } from 'kysely'
import pg from 'pg'
import type { PlinthTables } from '../src/infra/db/tables.ts'
import { createErrorRecorder, MAX_PENDING_GROUPS } from '../src/modules/errors/error-store.ts'
import { errorNameOf, fingerprintOf, normaliseFrames } from '../src/modules/errors/fingerprint.ts'
import { bearer, createUser, NO_RATE_LIMITS, type Session, uniqueEmail } from './helpers/accounts.ts'
import { assertProblem } from './helpers/assert-problem.ts'
import { captureLogs } from './helpers/log-capture.ts'
import { skipUnlessPostgres } from './helpers/services.ts'
import { testConfig } from './helpers/test-config.ts'
import { createTestDatabase } from './helpers/test-database.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'

interface Group {
  id: string
  location: string
  name: string
  message: string
  frames: string[]
  count: number
  status: string
  statusChangedAt: string | null
  sampleRequestId: string | null
  sampleTraceId: string | null
}

describe('error groups: what the recorder stores and how operators change them', () => {
  const config = testConfig({ ...NO_RATE_LIMITS })
  const logs = captureLogs(config, 'debug')
  let plinth: TestPlinth
  let admin: Session
  let rejection: Group

  const list = async (query = '') => {
    const res = await plinth.app.inject({ url: `/api/v1/admin/errors${query}`, headers: bearer(admin.token) })
    assert.equal(res.statusCode, 200, res.body)
    return (res.json() as { items: Group[] }).items
  }
  const patch = (id: string, status: string) =>
    plinth.app.inject({
      method: 'PATCH',
      url: `/api/v1/admin/errors/${id}`,
      headers: bearer(admin.token),
      payload: { status },
    })
  const auditOf = async (id: string) =>
    (
      await plinth.db.kysely
        .selectFrom('audit_log')
        .select('action')
        .where('target_id', '=', id)
        .orderBy('seq')
        .execute()
    ).map((a) => a.action)
  /** A process-level report is written at once (the process may be about to exit). */
  const reportFromProcess = async (error: unknown, where: string) => {
    plinth.context.errorReports.report({ error, source: 'process', where })
    await plinth.context.errorReports.settle(10_000)
  }

  before(async () => {
    plinth = await startTestPlinth({ config, logger: logs.logger })
    admin = await createUser(plinth, uniqueEmail('admin'), 'admin')
  })
  after(() => plinth?.close())

  it('stores a thrown non-error (a rejected string) under its type, with its text and no frames', async () => {
    await reportFromProcess('socket hang up', 'unhandledRejection')
    const group = (await list()).find((g) => g.location === 'unhandledRejection')
    assert.ok(group, 'the group was stored')
    assert.equal(group.name, 'string')
    assert.equal(group.message, 'socket hang up')
    assert.deepEqual(group.frames, [])
    assert.equal(group.count, 1)
    rejection = group

    const one = await plinth.app.inject({
      url: `/api/v1/admin/errors/${group.id}`,
      headers: bearer(admin.token),
    })
    assert.equal(one.statusCode, 200, one.body)
    assert.equal(one.json().id, group.id)
  })

  it('keeps the latest request id and trace id of a group seen again before the next write', async () => {
    const recorder = createErrorRecorder({
      db: plinth.db.kysely,
      logger: logs.logger,
      version: 'test',
      now: Date.now,
    })
    const error = new TypeError('boom')
    recorder.add({ error, source: 'http', where: 'GET /samples' })
    recorder.add({
      error,
      source: 'http',
      where: 'GET /samples',
      requestId: 'req-2',
      traceId: 'a'.repeat(32),
    })
    recorder.add({ error, source: 'http', where: 'GET /samples' })
    await recorder.stop()
    const group = (await list()).find((g) => g.location === 'GET /samples')
    assert.equal(group?.count, 3)
    assert.equal(group?.sampleRequestId, 'req-2', 'a later report without ids keeps the sample')
    assert.equal(group?.sampleTraceId, 'a'.repeat(32))
  })

  it(`holds at most ${MAX_PENDING_GROUPS} new groups between writes, and logs how many errors it dropped`, async () => {
    const recorder = createErrorRecorder({
      db: plinth.db.kysely,
      logger: logs.logger,
      version: 'test',
      now: Date.now,
    })
    for (let i = 0; i < MAX_PENDING_GROUPS + 3; i++)
      recorder.add({ error: new Error('storm'), source: 'job', where: `storm.job-${i}` })
    // A known group still counts while new ones are dropped.
    recorder.add({ error: new Error('storm'), source: 'job', where: 'storm.job-0' })
    await recorder.flush()
    const warned = logs
      .lines()
      .filter((l) => l.msg === 'error tracking dropped errors of too many new groups')
    assert.equal(warned.length, 1)
    assert.equal(warned[0]?.dropped, 3)
    assert.equal(warned[0]?.max, MAX_PENDING_GROUPS)
    const stored = await plinth.db.kysely
      .selectFrom('error_groups')
      .select(['location', 'count'])
      .where('location', 'like', 'storm.job-%')
      .execute()
    assert.equal(stored.length, MAX_PENDING_GROUPS)
    assert.equal(Number(stored.find((s) => s.location === 'storm.job-0')?.count), 2)
    // The next write starts from zero: nothing more is reported as dropped.
    await recorder.stop()
    assert.equal(logs.lines().filter((l) => l.msg === warned[0]?.msg).length, 1)
  })

  it('limits the list, and a status already set changes nothing (no audit row)', async () => {
    assert.equal((await list('?limit=1')).length, 1)
    const group = rejection
    const same = await patch(group.id, 'open')
    assert.equal(same.statusCode, 200, same.body)
    assert.equal(same.json().statusChangedAt, null)
    assert.deepEqual(await auditOf(group.id), [])
  })

  it('reopens a resolved group by hand, audited as error-group:reopened', async () => {
    const group = rejection
    assert.equal((await patch(group.id, 'resolved')).json().status, 'resolved')
    const reopened = await patch(group.id, 'open')
    assert.equal(reopened.statusCode, 200, reopened.body)
    assert.equal(reopened.json().status, 'open')
    assert.ok(reopened.json().statusChangedAt)
    assert.deepEqual(await auditOf(group.id), ['error-group:resolved', 'error-group:reopened'])
  })

  it('answers 404 for a group that does not exist', async () => {
    const res = await plinth.app.inject({
      url: '/api/v1/admin/errors/00000000-0000-4000-8000-000000000000',
      headers: bearer(admin.token),
    })
    assertProblem(res, 404, 'PLINTH_ERROR_GROUP_NOT_FOUND')
  })
})

describe('error groups: a write the database refuses', { skip: await skipUnlessPostgres() }, () => {
  it('logs the groups it could not store instead of failing, and starts afresh', async () => {
    // A database without Plinth's tables: every upsert fails (relation "error_groups" does not exist).
    const database = await createTestDatabase()
    const db = new Kysely<PlinthTables>({
      dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: database.url, max: 1 }) }),
    })
    const logs = captureLogs(testConfig(), 'debug')
    try {
      const recorder = createErrorRecorder({ db, logger: logs.logger, version: 'test', now: Date.now })
      recorder.add({ error: new Error('a'), source: 'http', where: 'GET /a' })
      recorder.add({ error: new Error('b'), source: 'http', where: 'GET /b' })
      await recorder.stop()
      const warned = logs.lines().filter((l) => l.msg === 'error groups could not be stored')
      assert.equal(warned.length, 1)
      assert.equal(warned[0]?.groups, 2)
      assert.match(String((warned[0]?.err as { message?: string } | undefined)?.message), /error_groups/)
      await recorder.flush() // the lost counts are not retried
      assert.equal(logs.lines().filter((l) => l.msg === 'error groups could not be stored').length, 1)
    } finally {
      await db.destroy()
      await database.drop()
    }
  })
})

describe('error fingerprints of unusual stacks', () => {
  it('has no frames without a stack, and skips lines that are not frames or are Node internals', () => {
    assert.deepEqual(normaliseFrames(undefined), [])
    assert.deepEqual(normaliseFrames(''), [])
    assert.deepEqual(
      normaliseFrames(
        [
          'Error: x',
          '    at new Promise (<anonymous>)',
          '    at Array.map (native)',
          '    at node:internal/process/task_queues:105:5',
          '    at /srv/app/dist/server.js:10:3',
          '    at file:///srv/app/src/main.ts:1:1',
          '    at <anonymous>',
          '  not a frame',
        ].join('\n'),
      ),
      [
        'new Promise (<anonymous>)',
        '<anonymous> (dist/server.js)',
        '<anonymous> (src/main.ts)',
        '<anonymous>',
      ],
    )
  })

  it('keeps at most the given number of frames', () => {
    const stack = [
      'Error: x',
      ...Array.from({ length: 9 }, (_, i) => `    at f${i} (/srv/src/a.ts:${i}:1)`),
    ].join('\n')
    assert.equal(normaliseFrames(stack).length, 5)
    assert.deepEqual(normaliseFrames(stack, 2), ['f0 (src/a.ts)', 'f1 (src/a.ts)'])
  })

  it('names errors by class, by code only for plain Errors, and by type for non-errors', () => {
    class QuotaError extends Error {
      override name = 'QuotaError'
    }
    assert.equal(errorNameOf(Object.assign(new QuotaError('x'), { code: 'EQUOTA' })), 'QuotaError')
    assert.equal(errorNameOf(Object.assign(new Error('x'), { code: 'not a code' })), 'Error')
    assert.equal(errorNameOf(Object.assign(new Error('x'), { name: '' })), 'Error')
    assert.equal(errorNameOf(42), 'number')
    assert.equal(errorNameOf(undefined), 'undefined')
  })

  it('groups thrown non-errors by their type and place only', () => {
    assert.equal(fingerprintOf('one text', 'job x'), fingerprintOf('another text', 'job x'))
    assert.notEqual(fingerprintOf('text', 'job x'), fingerprintOf(7, 'job x'))
    assert.match(fingerprintOf(null, 'job x'), /^[0-9a-f]{32}$/)
  })
})
