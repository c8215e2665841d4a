import assert from 'node:assert/strict'
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { type Kysely, sql } from 'kysely'
import { Type } from 'typebox'
import { builtinModules } from '../src/app/modules.ts'
import { defineJob } from '../src/core/jobs.ts'
import type { PlinthModule } from '../src/core/module.ts'
import type { PlinthTables } from '../src/infra/db/tables.ts'
import { BACKUP_JOB } from '../src/modules/backups/backup-job.ts'
import { backupServiceOf, createBackupService } from '../src/modules/backups/backups.module.ts'
import { listTables } from '../src/modules/backups/database-facts.ts'
import { createLocalTarget } from '../src/modules/backups/local-target.ts'
import { connectTo } from '../src/modules/backups/pg-dump-engine.ts'
import { bearer, createUser, login, NO_RATE_LIMITS, type Session, uniqueEmail } from './helpers/accounts.ts'
import { assertProblem } from './helpers/assert-problem.ts'
import { runCliWithEnv } from './helpers/run-cli.ts'
import { skipUnlessPostgres } from './helpers/services.ts'
import { TEST_MASTER_KEY, testConfig } from './helpers/test-config.ts'
import { createTestDatabase } from './helpers/test-database.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'
import { waitFor } from './helpers/wait-for.ts'

const skip = await skipUnlessPostgres()
const PROBE = 'backups.probe'
const probeModule: PlinthModule = {
  name: 'backups-probe',
  jobs: () => [defineJob({ name: PROBE, payload: Type.Object({ n: Type.Integer() }), handler() {} })],
}

const cli = runCliWithEnv

/**
 * A checksum of each table's content (md5 of its rows as text, sorted), for the tables that nothing
 * changes in the background (pg-boss' own and the heartbeat move by themselves).
 */
async function contentChecksums(db: Kysely<PlinthTables>): Promise<Record<string, string>> {
  const sums: Record<string, string> = {}
  for (const t of await listTables(db)) {
    if (t.schema !== 'public' || ['job_heartbeat', 'plinth_migrations_lock'].includes(t.table)) continue
    const { rows } = await sql<{ sum: string | null }>`
      select md5(coalesce(string_agg(r::text, E'\\n' order by r::text), '')) as sum from ${sql.table(`${t.schema}.${t.table}`)} r`.execute(
      db,
    )
    sums[`${t.schema}.${t.table}`] = rows[0]!.sum ?? ''
  }
  return sums
}

/** Users, sessions, a job, a webhook subscription and the audit rows they leave, all through the API. */
async function makeData(plinth: TestPlinth): Promise<{ admin: Session; member: string }> {
  const admin = await createUser(plinth, uniqueEmail('admin'), 'admin')
  const member = uniqueEmail('member')
  await createUser(plinth, member, 'member')
  await login(plinth.app, member)
  const job = await plinth.app.inject({
    method: 'POST',
    url: `/api/v1/jobs/${PROBE}`,
    headers: bearer(admin.token),
    payload: { payload: { n: 1 }, delay: 3600 },
  })
  assert.equal(job.statusCode, 202, job.body)
  const hook = await plinth.app.inject({
    method: 'POST',
    url: '/api/v1/webhooks',
    headers: bearer(admin.token),
    payload: { url: 'http://127.0.0.1:9/hook', eventTypes: ['user.*'] },
  })
  assert.equal(hook.statusCode, 201, hook.body)
  await plinth.context.audit.seal()
  return { admin, member }
}

describe('backups over HTTP', () => {
  let plinth: TestPlinth
  let dir: string
  let admin: Session
  let member: Session

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'plinth-backups-http-'))
    plinth = await startTestPlinth({
      env: { ...NO_RATE_LIMITS, PLINTH_BACKUP_DIR: dir, PLINTH_MASTER_KEY: TEST_MASTER_KEY },
    })
    admin = await createUser(plinth, uniqueEmail('admin'), 'admin')
    member = await createUser(plinth, uniqueEmail('member'), 'member')
  })
  after(async () => {
    await plinth.close()
    rmSync(dir, { recursive: true, force: true })
  })

  it('POST /admin/backups enqueues the backup job and answers 202 with its link; the job backs up and verifies', async () => {
    const res = await plinth.app.inject({
      method: 'POST',
      url: '/api/v1/admin/backups',
      headers: bearer(admin.token),
    })
    assert.equal(res.statusCode, 202, res.body)
    const { job } = res.json()
    assert.equal(job.href, `/api/v1/jobs/${job.id}`)
    assert.equal(res.headers.location, job.href)
    const done = await waitFor<{ output: { id: string } }>(
      'the backup job to complete',
      async () => {
        const j = await plinth.app.inject({ method: 'GET', url: job.href, headers: bearer(admin.token) })
        const state = j.json().state
        assert.notEqual(state, 'failed', j.body)
        return state === 'completed' ? j.json() : false
      },
      { timeoutMs: 60_000, intervalMs: 100 },
    )
    const shown = await plinth.app.inject({
      method: 'GET',
      url: `/api/v1/admin/backups/${done.output.id}`,
      headers: bearer(admin.token),
    })
    const body = shown.json()
    assert.equal(body.status, 'verified')
    assert.equal(body.manifest.kind, 'embedded')
    assert.equal(body.manifest.rowCounts['public.users'], 2)
    assert.equal('wrappedKey' in body.manifest, false, 'wrapped keys stay out of the API')
    assert.ok(body.verification.checks.every((c: { ok: boolean }) => c.ok))

    const list = await plinth.app.inject({
      method: 'GET',
      url: '/api/v1/admin/backups',
      headers: bearer(admin.token),
    })
    assert.equal(list.statusCode, 200)
    assert.deepEqual(
      list.json().backups.map((b: { id: string }) => b.id),
      [body.id],
    )
    const one = await plinth.app.inject({
      method: 'GET',
      url: `/api/v1/admin/backups/${body.id}`,
      headers: bearer(admin.token),
    })
    assert.equal(one.statusCode, 200)
    assert.equal(one.json().manifest.parts[0].sha256, body.manifest.parts[0].sha256)

    await plinth.context.audit.seal()
    const { rows } = await sql<{ action: string; outcome: string }>`
      select action, outcome from audit_log where target_type = 'backup' and target_id = ${body.id} order by seq`.execute(
      plinth.db.kysely,
    )
    assert.deepEqual(rows, [
      { action: 'backup:created', outcome: 'success' },
      { action: 'backup:verified', outcome: 'success' },
    ])
  })

  it('POST /admin/backups while a backup is queued (not started) answers 202 with that job instead of stacking another', async () => {
    const queued = await plinth.context.jobs.enqueue(BACKUP_JOB, {}, { delay: 3_600_000 })
    try {
      const res = await plinth.app.inject({
        method: 'POST',
        url: '/api/v1/admin/backups',
        headers: bearer(admin.token),
      })
      assert.equal(res.statusCode, 202, res.body)
      assert.equal(res.json().job.id, queued.id)
      assert.equal(res.json().created, false)
      assert.equal(res.headers.location, `/api/v1/jobs/${queued.id}`)
      assert.equal(await plinth.context.jobs.waiting(BACKUP_JOB, 10), 1, 'no second backup was queued')
    } finally {
      await plinth.context.jobs.cancel(queued.id)
    }
  })

  it('POST /admin/backups and /admin/backups/drills answer 409 PLINTH_BACKUP_NOT_CONFIGURED without a target, and queue nothing', async () => {
    const inMemory = await startTestPlinth({ env: { ...NO_RATE_LIMITS, PLINTH_MASTER_KEY: TEST_MASTER_KEY } })
    try {
      const root = await createUser(inMemory, uniqueEmail('admin'), 'admin')
      for (const url of ['/api/v1/admin/backups', '/api/v1/admin/backups/drills'])
        assertProblem(
          await inMemory.app.inject({ method: 'POST', url, headers: bearer(root.token) }),
          409,
          'PLINTH_BACKUP_NOT_CONFIGURED',
        )
      assert.equal(await inMemory.context.jobs.waiting(BACKUP_JOB, 10), 0)
    } finally {
      await inMemory.close()
    }
  })

  it('answers problem+json for bad input and callers without backups:manage', async () => {
    assertProblem(
      await plinth.app.inject({
        method: 'GET',
        url: '/api/v1/admin/backups/../../etc',
        headers: bearer(admin.token),
      }),
      404,
      'PLINTH_HTTP_NOT_FOUND',
    )
    assertProblem(
      await plinth.app.inject({
        method: 'GET',
        url: '/api/v1/admin/backups/not-an-id',
        headers: bearer(admin.token),
      }),
      400,
      'PLINTH_HTTP_INVALID_REQUEST',
    )
    assertProblem(
      await plinth.app.inject({
        method: 'GET',
        url: '/api/v1/admin/backups/20200101T000000Z-00000000',
        headers: bearer(admin.token),
      }),
      404,
      'PLINTH_BACKUP_NOT_FOUND',
    )
    for (const [method, url] of [
      ['POST', '/api/v1/admin/backups'],
      ['GET', '/api/v1/admin/backups'],
      ['GET', '/api/v1/admin/backups/20200101T000000Z-00000000'],
    ] as const) {
      assertProblem(
        await plinth.app.inject({ method, url, headers: bearer(member.token) }),
        403,
        'PLINTH_AUTH_FORBIDDEN',
      )
      assertProblem(await plinth.app.inject({ method, url }), 401, 'PLINTH_AUTH_REQUIRED')
    }
  })
})

describe('embedded round trip: API data → backup → restore into a new data directory with the master key alone', () => {
  it('restores identical content, the audit chain verifies, and the restored instance serves the users', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'plinth-backups-embedded-'))
    const env = {
      ...NO_RATE_LIMITS,
      PLINTH_WEBHOOKS_ALLOW_PRIVATE: 'true',
      PLINTH_BACKUP_DIR: join(dir, 'backups'),
      PLINTH_MASTER_KEY: TEST_MASTER_KEY,
    }
    const source = await startTestPlinth({ env, modules: [probeModule] })
    let restored: TestPlinth | undefined
    try {
      const { member } = await makeData(source)
      const before = await contentChecksums(source.db.kysely)
      const backup = await backupServiceOf(source.context).create()
      assert.equal(backup.manifest?.rowCounts['public.users'], 2)
      assert.ok((backup.manifest?.rowCounts['public.audit_log'] ?? 0) > 0)
      assert.ok(backup.manifest?.auditHead, 'the audit head is recorded')

      // Another process, whose own (empty, in-memory) database has none of the source's data keys.
      const cliEnv = { ...env, PLINTH_DATA_DIR: 'memory://', PLINTH_ENV: 'test', PLINTH_LOG_LEVEL: 'silent' }
      const target = join(dir, 'restored')
      const r = await cli(['backup', 'restore', backup.id, '--data-dir', target, '--json'], cliEnv)
      assert.equal(r.code, 0, r.err)
      assert.equal(JSON.parse(r.out).matches, true)

      const again = await cli(['backup', 'restore', backup.id, '--data-dir', target], cliEnv)
      assert.equal(again.code, 1)
      assert.match(again.err, /PLINTH_BACKUP_TARGET_NOT_EMPTY/)

      restored = await startTestPlinth({
        config: testConfig({ ...env, PLINTH_DATA_DIR: target }),
        modules: [probeModule],
      })
      assert.deepEqual(await contentChecksums(restored.db.kysely), before)
      const chain = await restored.context.audit.verifyChain(restored.db.kysely)
      assert.equal(chain.ok, true, chain.failure)
      assert.deepEqual(chain.head, backup.manifest?.auditHead)
      await login(restored.app, member)
    } finally {
      await restored?.close()
      await source.close()
      rmSync(dir, { recursive: true, force: true })
    }
  })
})

describe('PostgreSQL round trip: API data → pg_dump backup → restore into another database', { skip }, () => {
  it('restores identical content into an empty database, refuses a non-empty one, and the restored instance serves the users', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'plinth-backups-pg-'))
    const env = {
      ...NO_RATE_LIMITS,
      PLINTH_WEBHOOKS_ALLOW_PRIVATE: 'true',
      PLINTH_BACKUP_DIR: dir,
      PLINTH_MASTER_KEY: TEST_MASTER_KEY,
    }
    const source = await startTestPlinth({ backend: 'postgres', env, modules: [probeModule] })
    const empty = await createTestDatabase()
    let restored: TestPlinth | undefined
    try {
      const { member } = await makeData(source)
      const before = await contentChecksums(source.db.kysely)
      const service = backupServiceOf(source.context)
      const backup = await service.create()
      assert.equal(backup.manifest?.kind, 'postgres')
      const verified = await service.verify(backup.id)
      assert.equal(verified.ok, true, JSON.stringify(verified.checks))

      const cliEnv = {
        ...env,
        DATABASE_URL: source.config.databaseUrl!,
        PLINTH_ENV: 'test',
        PLINTH_LOG_LEVEL: 'silent',
      }
      const list = await cli(['backup', 'list'], cliEnv)
      assert.equal(list.code, 0, list.err)
      assert.match(list.out, new RegExp(`${backup.id}\\s+postgres\\s+verified`))

      const r = await cli(['backup', 'restore', backup.id, '--target', empty.url, '--json'], cliEnv)
      assert.equal(r.code, 0, r.err)
      assert.equal(JSON.parse(r.out).matches, true)
      const refused = await cli(['backup', 'restore', backup.id, '--target', empty.url], cliEnv)
      assert.equal(refused.code, 1)
      assert.match(refused.err, /PLINTH_BACKUP_TARGET_NOT_EMPTY/)

      const conn = connectTo(empty.url)
      try {
        assert.deepEqual(await contentChecksums(conn.kysely), before)
      } finally {
        await conn.close()
      }
      restored = await startTestPlinth({
        config: testConfig({ ...env, DATABASE_URL: empty.url }),
        modules: [probeModule],
      })
      const chain = await restored.context.audit.verifyChain(restored.db.kysely)
      assert.equal(chain.ok, true, chain.failure)
      await login(restored.app, member)
    } finally {
      await restored?.close()
      await source.close()
      await empty.drop()
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it('refuses a backup taken at a migration this code does not know', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'plinth-backups-new-'))
    const source = await startTestPlinth({
      backend: 'postgres',
      env: { PLINTH_BACKUP_DIR: dir, PLINTH_MASTER_KEY: TEST_MASTER_KEY },
    })
    const empty = await createTestDatabase()
    try {
      await sql`insert into plinth_migrations (name, timestamp) values ('9999-from-the-future', now()::text)`.execute(
        source.db.kysely,
      )
      const service = backupServiceOf(source.context)
      const backup = await service.create()
      assert.equal(backup.manifest?.migrationHead, '9999-from-the-future')
      await sql`delete from plinth_migrations where name = '9999-from-the-future'`.execute(source.db.kysely)
      const knownMigrations = builtinModules.flatMap((m) => Object.keys(m.migrations ?? {}))
      await assert.rejects(
        service.restore(backup.id, { databaseUrl: empty.url, force: true, knownMigrations }),
        {
          code: 'PLINTH_BACKUP_TOO_NEW',
        },
      )
      const conn = connectTo(empty.url)
      try {
        assert.equal((await listTables(conn.kysely)).length, 0, 'nothing was restored')
      } finally {
        await conn.close()
      }
    } finally {
      await source.close()
      await empty.drop()
      rmSync(dir, { recursive: true, force: true })
    }
  })
})

describe('retention: plinth backup prune', () => {
  it('--dry-run lists what grandfather-father-son retention would delete; prune deletes exactly that', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'plinth-backups-prune-'))
    const env = { PLINTH_BACKUP_DIR: dir, PLINTH_MASTER_KEY: TEST_MASTER_KEY }
    const plinth = await startTestPlinth({ env })
    try {
      let clock = new Date('2026-03-01T10:00:00Z')
      const ctx = plinth.context
      const service = createBackupService({
        config: {
          ...ctx.config,
          backupKeepHourly: 1,
          backupKeepDaily: 2,
          backupKeepWeekly: 0,
          backupKeepMonthly: 0,
        },
        logger: ctx.logger,
        db: ctx.db,
        keyring: ctx.keyring,
        audit: ctx.audit,
        target: createLocalTarget(dir),
        now: () => clock,
      })
      const made: string[] = []
      for (const t of [
        '2026-03-01T10:00:00Z',
        '2026-03-01T11:00:00Z',
        '2026-03-02T09:00:00Z',
        '2026-03-02T10:00:00Z',
      ]) {
        clock = new Date(t)
        const b = await service.create()
        made.push(b.id)
        if (t !== '2026-03-02T10:00:00Z') assert.equal((await service.verify(b.id)).ok, true)
      }
      const [day1early, day1late, day2verified, day2pending] = made as [string, string, string, string]

      const cliEnv = {
        ...env,
        PLINTH_DATA_DIR: 'memory://',
        PLINTH_ENV: 'test',
        PLINTH_LOG_LEVEL: 'silent',
        PLINTH_BACKUP_KEEP_HOURLY: '1',
        PLINTH_BACKUP_KEEP_DAILY: '2',
        PLINTH_BACKUP_KEEP_WEEKLY: '0',
        PLINTH_BACKUP_KEEP_MONTHLY: '0',
      }
      const dry = await cli(['backup', 'prune', '--dry-run'], cliEnv)
      assert.equal(dry.code, 0, dry.err)
      assert.match(dry.out, new RegExp(`would remove ${day1early}`))
      assert.match(dry.out, /1 would remove \(dry run: nothing deleted\)/)
      assert.equal((await service.list()).length, 4, 'a dry run deletes nothing')

      const plan = await service.prune()
      assert.deepEqual(
        plan.remove.map((r) => r.id),
        [day1early],
      )
      assert.deepEqual(plan.keep.map((k) => k.id).sort(), [day1late, day2verified, day2pending].sort())
      assert.equal(existsSync(join(dir, `${day1early}.archive`)), false)
      assert.equal(existsSync(join(dir, `${day1early}.manifest.json`)), false)
      assert.deepEqual(
        (await service.list()).map((b) => b.id).sort(),
        [day1late, day2verified, day2pending].sort(),
      )

      await ctx.audit.seal()
      const { rows } = await sql<{
        n: string
      }>`select count(*)::text as n from audit_log where action = 'backup:pruned'`.execute(plinth.db.kysely)
      assert.equal(rows[0]!.n, '1')
    } finally {
      await plinth.close()
      rmSync(dir, { recursive: true, force: true })
    }
  })
})

describe('the scheduled backup job', () => {
  it('is a built-in schedule; a run backs up, verifies and prunes, and shows on /api/metrics and /health', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'plinth-backups-job-'))
    // A schedule that exists but does not fire during the test: the job is enqueued by hand.
    const plinth = await startTestPlinth({
      env: {
        PLINTH_BACKUP_DIR: dir,
        PLINTH_MASTER_KEY: TEST_MASTER_KEY,
        PLINTH_BACKUP_CRON: '0 0 1 1 *',
        PLINTH_BACKUP_MAX_AGE: '1h',
      },
    })
    try {
      await waitFor(
        'the built-in backup schedule',
        async () => (await plinth.context.schedules.list()).some((s) => s.jobName === 'plinth.backup'),
        { timeoutMs: 60_000 },
      )
      const service = backupServiceOf(plinth.context)
      await plinth.context.jobs.enqueue('plinth.backup', {})
      const done = await waitFor(
        'a verified backup made by the job',
        async () => (await service.list()).find((b) => b.status === 'verified'),
        { timeoutMs: 120_000, intervalMs: 250 },
      )
      assert.equal(done.manifest?.kind, 'embedded')
      // The verification is stored before the job counts it: wait for the count, then check both.
      const metrics = await waitFor(
        'the verification counted on /api/metrics',
        async () => {
          const res = await plinth.app.inject({ method: 'GET', url: '/api/metrics' })
          return /plinth_backup_verifications_total\{kind="embedded",result="ok"\} 1/.test(res.body)
            ? res
            : undefined
        },
        { timeoutMs: 30_000, intervalMs: 100 },
      )
      assert.match(metrics.body, /plinth_backup_last_success_timestamp_seconds\{kind="embedded"\} \d/)
      const health = await plinth.app.inject({ method: 'GET', url: '/health' })
      assert.equal(health.json().components.backups.status, 'up', health.body)
      assert.equal(health.json().components.backups.details.newestVerified, done.id)
    } finally {
      await plinth.close()
      rmSync(dir, { recursive: true, force: true })
    }
  })
})

describe('a database that drops mid-dump', { skip }, () => {
  it('fails the backup with PLINTH_BACKUP_ENGINE_FAILED, publishes nothing and leaves no temporary file', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'plinth-backups-drop-'))
    const source = await startTestPlinth({
      backend: 'postgres',
      env: { PLINTH_BACKUP_DIR: dir, PLINTH_MASTER_KEY: TEST_MASTER_KEY },
    })
    try {
      // Enough rows that pg_dump is still copying them when its connection is cut.
      await sql`create table dump_filler as select g, md5(g::text) || repeat('x', 400) as t from generate_series(1, 300000) g`.execute(
        source.db.kysely,
      )
      const service = backupServiceOf(source.context)
      const created = service.create()
      created.catch(() => {})
      const killed = await waitFor(
        'pg_dump copying a table',
        async () => {
          const { rows } = await sql<{ killed: boolean }>`
            select pg_terminate_backend(pid) as killed from pg_stat_activity
             where application_name = 'pg_dump' and datname = current_database() and query ilike 'copy%'`.execute(
            source.db.kysely,
          )
          return rows.some((r) => r.killed) || undefined
        },
        { timeoutMs: 60_000, intervalMs: 10 },
      )
      assert.equal(killed, true)
      await assert.rejects(created, { code: 'PLINTH_BACKUP_ENGINE_FAILED' })
      assert.deepEqual(await service.list(), [])
      assert.deepEqual(readdirSync(dir), [], 'no temporary or orphan file is left')
      await source.context.audit.seal()
      const { rows } = await sql<{
        outcome: string
      }>`select outcome from audit_log where action = 'backup:created'`.execute(source.db.kysely)
      assert.deepEqual(rows, [{ outcome: 'failure' }])
    } finally {
      await source.close()
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
