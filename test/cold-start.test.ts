import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { existsSync, mkdtempSync, readFileSync, rmSync, truncateSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import pg from 'pg'
import { pino } from 'pino'
import { Type } from 'typebox'
import { createPlinth } from '../src/app/create-plinth.ts'
import { builtinModules } from '../src/app/modules.ts'
import { prestartEmbeddedDatabase } from '../src/infra/db/embedded-prestart.ts'
import { type EmbeddedServer, startEmbeddedServer } from '../src/infra/db/embedded-server.ts'
import { hasTemplateDir, migratedTemplateDirPath, migratedTemplatePath } from '../src/infra/db/template.ts'
import { testConfig } from './helpers/test-config.ts'
import { startTestPlinth } from './helpers/test-plinth.ts'

const logger = pino({ level: 'silent' })

/** One query through the server's socket, as any client would. */
async function query<R extends pg.QueryResultRow>(server: EmbeddedServer, sql: string): Promise<R[]> {
  const client = new pg.Client({
    host: server.socketDir,
    port: server.socketPort,
    user: 'postgres',
    database: 'postgres',
  })
  await client.connect()
  try {
    return (await client.query<R>(sql)).rows
  } finally {
    await client.end()
  }
}

describe('cold start (decision 0034)', () => {
  const dirs: string[] = []
  const servers: EmbeddedServer[] = []
  // A migration set of its own: these tests' templates never meet another start's.
  const key = `test${randomBytes(6).toString('hex')}`
  after(async () => {
    for (const s of servers) await s.close().catch(() => {})
    for (const d of dirs) rmSync(d, { recursive: true, force: true })
    rmSync(migratedTemplatePath(key), { force: true })
    rmSync(migratedTemplateDirPath(key), { recursive: true, force: true })
  })
  const tempDir = () => {
    const d = mkdtempSync(join(tmpdir(), 'plinth-cold-'))
    dirs.push(d)
    return d
  }
  const server = (dataDir: string, options: { awaitMigrationSetKey?: boolean } = {}) => {
    const s = startEmbeddedServer({
      dataDir,
      logger,
      maxConnections: 4,
      startTimeoutMs: 120_000,
      ...(options.awaitMigrationSetKey ? { awaitMigrationSetKey: true } : { migrationSetKey: key }),
    })
    servers.push(s)
    return s
  }

  it('keeps the migrated template as a ready directory, and a new cluster copies it', async () => {
    const first = server(tempDir())
    await first.whenUp()
    assert.ok(['template', 'initdb'].includes(first.origin() ?? ''), first.origin())
    // Stands for the migrations: what the template holds.
    await query(
      first,
      `create table cold_marker (v text); insert into cold_marker values ('in the template')`,
    )
    await first.cacheMigrated(key)
    assert.ok(existsSync(migratedTemplatePath(key)), 'no migrated template tar')
    assert.equal(hasTemplateDir(migratedTemplateDirPath(key)), false)
    // Built in a worker of its own; close() waits for it.
    await first.cacheTemplateDir()
    await first.close()
    assert.ok(hasTemplateDir(migratedTemplateDirPath(key)), 'no template directory built')

    const second = server(tempDir())
    await second.whenUp()
    assert.equal(second.origin(), 'copied')
    assert.deepEqual(await query(second, 'select v from cold_marker'), [{ v: 'in the template' }])
    await query(second, `insert into cold_marker values ('only in this cluster')`)
    await second.close()

    // The copy is the cluster's own: the template did not change.
    const third = server(tempDir())
    await third.whenUp()
    assert.equal(third.origin(), 'copied')
    assert.deepEqual(await query(third, 'select v from cold_marker'), [{ v: 'in the template' }])
    await third.close()
  })

  it('falls back to the tar when the template directory is damaged, and drops the directory', async () => {
    const dir = migratedTemplateDirPath(key)
    assert.ok(hasTemplateDir(dir), 'the previous test built it')
    truncateSync(join(dir, 'global', 'pg_control'), 0)
    const s = server(tempDir())
    await s.whenUp()
    assert.equal(s.origin(), 'migrated')
    assert.deepEqual(await query(s, 'select v from cold_marker'), [{ v: 'in the template' }])
    assert.equal(existsSync(dir), false, 'the damaged directory was kept')
    // The next start after this one (which used the tar) builds it again.
    await s.cacheTemplateDir()
    await s.close()
    assert.ok(hasTemplateDir(dir), 'not rebuilt')
  })

  it('a server started before the migration set is known opens an existing cluster at once, and a new one from that set', async () => {
    const existing = tempDir()
    const made = server(existing)
    await made.whenUp()
    await query(made, `create table cold_own (v text); insert into cold_own values ('mine')`)
    await made.close()

    const early = server(existing, { awaitMigrationSetKey: true })
    // Never given the key: an existing cluster does not wait for it.
    await early.whenUp()
    assert.equal(early.origin(), 'existing')
    assert.deepEqual(await query(early, 'select v from cold_own'), [{ v: 'mine' }])
    await early.close()

    // A new cluster waits: started from the plain template, it would hold no cold_marker. Meanwhile
    // it copies aside the template directory used last (this set's: the tests above used it).
    const freshDir = tempDir()
    const fresh = server(freshDir, { awaitMigrationSetKey: true })
    fresh.setMigrationSetKey(key)
    await fresh.whenUp()
    assert.ok(['copied', 'migrated'].includes(fresh.origin() ?? ''), fresh.origin())
    assert.deepEqual(await query(fresh, 'select v from cold_marker'), [{ v: 'in the template' }])
    await fresh.close()
    assert.equal(existsSync(join(freshDir, 'pglite.staged')), false, 'the copy aside was not the one used')

    // A set other than the guessed one (here one without a template): the copy aside is not used,
    // and it is removed.
    const otherDir = tempDir()
    const other = server(otherDir, { awaitMigrationSetKey: true })
    other.setMigrationSetKey(`${key}-other`)
    await other.whenUp()
    assert.ok(['template', 'initdb'].includes(other.origin() ?? ''), other.origin())
    assert.deepEqual(await query(other, `select to_regclass('cold_marker') as t`), [{ t: null }])
    await other.close()
    const until = Date.now() + 30_000
    while (existsSync(join(otherDir, 'pglite.staged')) && Date.now() < until)
      await new Promise((r) => setTimeout(r, 50))
    assert.equal(existsSync(join(otherDir, 'pglite.staged')), false, 'the copy aside was left')

    // Closed while waiting for a key that never comes: stops without hanging.
    const abandoned = server(tempDir(), { awaitMigrationSetKey: true })
    await abandoned.close()
    assert.equal(abandoned.isUp(), false)
  })

  it('a new cluster comes with the job engine and its queues; a restart adopts the pre-started database, writes no queue or schedule copy that matches, and repairs those that drifted', async () => {
    type Queue = { name: string; retry_limit: number; created_on: Date; updated_on: Date }
    type Copy = { name: string; key: string; cron: string; updated_on: Date }
    const queues = async (p: { db: { pool: pg.Pool } }) =>
      (
        await p.db.pool.query<Queue>(
          'select name, retry_limit, created_on, updated_on from plinth_jobs.queue order by name',
        )
      ).rows
    const copies = async (p: { db: { pool: pg.Pool } }) =>
      (
        await p.db.pool.query<Copy>(
          'select name, key, cron, updated_on from plinth_jobs.schedule order by name, key',
        )
      ).rows

    // A new cluster from the migrated template (decision 0039). On a machine without one yet, the
    // first start builds it from scratch and keeps it; the next new cluster then comes from it.
    let dataDir = tempDir()
    let startedAt = new Date()
    let first = await startTestPlinth({ env: { PLINTH_DATA_DIR: dataDir } })
    if (!['copied', 'migrated'].includes(first.db.embedded?.origin() ?? '')) {
      await first.close()
      dataDir = tempDir()
      startedAt = new Date()
      first = await startTestPlinth({ env: { PLINTH_DATA_DIR: dataDir } })
    }
    const config = testConfig({ PLINTH_DATA_DIR: dataDir })
    let before: Queue[]
    let copiesBefore: Copy[]
    try {
      assert.ok(
        ['copied', 'migrated'].includes(first.db.embedded?.origin() ?? ''),
        first.db.embedded?.origin(),
      )
      before = await queues(first)
      copiesBefore = await copies(first)
      // Every queue (and pg-boss' schema) came with the template: this start created none.
      assert.ok(before.some((q) => q.name === 'plinth.retention'))
      // (pg-boss' own cron queue, `__pgboss__send-it`, is created by its first start with cron on.)
      for (const q of before)
        if (!q.name.startsWith('__pgboss__'))
          assert.ok(q.created_on < startedAt, `${q.name} was created by this start`)
      assert.ok(copiesBefore.some((c) => c.key === 'plinth.retention'))
      // Drift: an operator's (or an older version's) change to one queue and one schedule copy.
      await first.db.pool.query(
        `update plinth_jobs.queue set retry_limit = 17 where name = 'plinth.retention'`,
      )
      await first.db.pool.query(
        `update plinth_jobs.schedule set cron = '0 0 1 1 *' where key = 'plinth.retention'`,
      )
    } finally {
      await first.close()
    }

    // The restart as `plinth start` does it: the database started before the application loads.
    const prestarted = prestartEmbeddedDatabase(config, { logger })
    assert.ok(prestarted)
    const lock = join(dataDir, 'plinth.lock')
    assert.equal(readFileSync(lock, 'utf8').trim(), String(process.pid))
    const again = await createPlinth({
      config,
      logger,
      modules: builtinModules,
      prestartedDatabase: prestarted,
    })
    try {
      assert.equal(again.db.embedded, prestarted.server)
      assert.equal(prestarted.take(), undefined, 'handed on twice')
      await again.prepare()
      assert.equal(again.db.embedded?.origin(), 'existing')
      assert.equal((await again.app.inject('/ready')).statusCode, 200)
      const after = await queues(again)
      const copiesAfter = await copies(again)
      assert.deepEqual(
        after.map((q) => q.name),
        before.map((q) => q.name),
      )
      for (const q of after) {
        const was = before.find((b) => b.name === q.name)!
        assert.equal(q.retry_limit, was.retry_limit, `${q.name}: retry limit not put back`)
        if (q.name === 'plinth.retention')
          assert.ok(q.updated_on > was.updated_on, 'the drifted queue was not updated')
        else assert.deepEqual(q.updated_on, was.updated_on, `${q.name} was rewritten`)
      }
      for (const c of copiesAfter) {
        const was = copiesBefore.find((b) => b.name === c.name && b.key === c.key)!
        assert.equal(c.cron, was.cron, `${c.key}: cron not put back`)
        if (c.key === 'plinth.retention')
          assert.ok(c.updated_on > was.updated_on, 'the drifted copy was not re-armed')
        else assert.deepEqual(c.updated_on, was.updated_on, `${c.key} was rewritten`)
      }
    } finally {
      await again.shutdown()
    }
    assert.equal(existsSync(lock), false, 'the lock outlived the shutdown')

    // Pre-started for another directory (or no longer wanted): stopped, its lock released.
    const other = tempDir()
    const stray = prestartEmbeddedDatabase(testConfig({ PLINTH_DATA_DIR: other }), { logger })
    assert.ok(stray)
    const elsewhere = await createPlinth({
      config: testConfig({ PLINTH_DATA_DIR: 'memory://' }),
      logger,
      modules: builtinModules,
      prestartedDatabase: stray,
    })
    try {
      assert.equal(existsSync(join(other, 'plinth.lock')), false)
      assert.equal(stray.server.isUp(), false)
      assert.notEqual(elsewhere.db.embedded, stray.server)
    } finally {
      await elsewhere.shutdown()
    }
    // Nothing to start early for a PostgreSQL server or an in-memory database.
    assert.equal(
      prestartEmbeddedDatabase(testConfig({ PLINTH_DATA_DIR: 'memory://' }), { logger }),
      undefined,
    )
    assert.equal(
      prestartEmbeddedDatabase(testConfig({ DATABASE_URL: 'postgres://127.0.0.1:5432/none' }), { logger }),
      undefined,
    )
  })

  it('refuses a job type whose payload schema is invalid when it registers (validators compile on first use)', async () => {
    const plinth = await startTestPlinth({ prepare: false })
    try {
      assert.throws(
        () =>
          plinth.jobs.register({
            name: 'cold.bad',
            payload: { type: 'no-such-type' } as never,
            handler: () => {},
          }),
        /Job type "cold.bad" has an invalid payload schema/,
      )
      assert.equal(plinth.jobs.has('cold.bad'), false)
      // A Type.Unsafe part is not TypeBox's: checked at registration too.
      assert.throws(
        () =>
          plinth.jobs.register({
            name: 'cold.unsafe',
            payload: Type.Object({ a: Type.Unsafe({ type: 'no-such-type' }) }),
            handler: () => {},
          }),
        /Job type "cold.unsafe" has an invalid payload schema/,
      )
      // Built by TypeBox, with a wrong keyword value: its validator's compile, at the first
      // enqueue, refuses it with the same message, and nothing is enqueued.
      plinth.jobs.register({
        name: 'cold.late',
        payload: Type.Object({ a: Type.String({ minLength: -1 }) }),
        handler: () => {},
      })
      await plinth.prepare()
      await assert.rejects(plinth.jobs.enqueue('cold.late', { a: 'x' }), {
        message: /Job type "cold.late" has an invalid payload schema: .*minLength/,
      })
      assert.throws(() => plinth.jobs.validatePayload('cold.late', { a: 'x' }), /invalid payload schema/)
      assert.equal((await plinth.jobs.list({ name: 'cold.late' })).items.length, 0)
    } finally {
      await plinth.close()
    }
  })
})
