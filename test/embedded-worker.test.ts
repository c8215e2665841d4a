import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import pg from 'pg'
import { spawnCli } from './helpers/spawn-cli.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'

/** Polls `check` until it returns true, failing after `deadlineMs`. */
async function until(what: string, check: () => Promise<boolean>, deadlineMs = 60_000): Promise<void> {
  const deadline = Date.now() + deadlineMs
  while (Date.now() < deadline) {
    if (await check()) return
    await new Promise((r) => setTimeout(r, 25))
  }
  assert.fail(`timed out waiting for ${what}`)
}

describe('the embedded database in a worker thread', () => {
  const dirs: string[] = []
  const instances: TestPlinth[] = []
  after(async () => {
    for (const p of instances) await p.close().catch(() => {})
    for (const d of dirs) rmSync(d, { recursive: true, force: true })
  })
  const tempDir = () => {
    const d = mkdtempSync(join(tmpdir(), 'plinth-worker-'))
    dirs.push(d)
    return d
  }

  it('answers /live while a long query runs', async () => {
    const plinth = await startTestPlinth()
    instances.push(plinth)
    let done = false
    // pg_sleep runs inside PGlite; on the main thread it would block the event loop throughout.
    const query = plinth.db.pool.query('select pg_sleep(1.5)').finally(() => {
      done = true
    })
    let answeredDuringQuery = 0
    while (!done) {
      const res = await plinth.app.inject('/live')
      assert.equal(res.statusCode, 200)
      if (!done) answeredDuringQuery++
      await new Promise((r) => setTimeout(r, 10))
    }
    await query
    assert.ok(answeredDuringQuery >= 3, `/live answered ${answeredDuringQuery} times during the query`)
  })

  it('serialises transactions: another connection (the CLI’s) waits for the open one', async () => {
    const plinth = await startTestPlinth()
    instances.push(plinth)
    const { pool, embedded } = plinth.db
    assert.ok(embedded)
    await pool.query('create table t_serial (n int)')
    const other = new pg.Client({
      host: embedded.socketDir,
      port: embedded.socketPort,
      user: 'postgres',
      database: 'postgres',
    })
    await other.connect()
    const a = await pool.connect()
    try {
      await a.query('begin')
      await a.query('insert into t_serial values (1)')
      let otherDone = false
      const count = other.query('select count(*)::int as n from t_serial').then((r) => {
        otherDone = true
        return r.rows[0].n as number
      })
      // PGlite has one session: the other connection's query runs only after the transaction.
      await new Promise((r) => setTimeout(r, 200))
      assert.equal(otherDone, false)
      await a.query('rollback')
      assert.equal(await count, 0)
    } finally {
      a.release()
      await other.end()
    }
  })

  it('turns /ready 503 when the worker dies, restarts it and keeps the data', async () => {
    const dataDir = tempDir()
    const plinth = await startTestPlinth({ env: { PLINTH_DATA_DIR: dataDir } })
    instances.push(plinth)
    const embedded = plinth.db.embedded
    assert.ok(embedded)
    await plinth.db.pool.query('create table kept (v text)')
    await plinth.db.pool.query(`insert into kept values ('before the crash')`)
    assert.equal((await plinth.app.inject('/ready')).statusCode, 200)

    const before = embedded.worker()
    assert.ok(before)
    await before.terminate()
    // Down is noticed at once, without waiting for a query to time out.
    assert.equal(embedded.isUp(), false)
    const down = await plinth.app.inject('/ready')
    assert.equal(down.statusCode, 503)
    assert.ok(down.json().failing.some((f: { component: string }) => f.component === 'database'))

    await embedded.whenUp()
    assert.notEqual(embedded.worker(), before)
    await until(
      '/ready to answer 200 again',
      async () => (await plinth.app.inject('/ready')).statusCode === 200,
    )
    const { rows } = await plinth.db.pool.query('select v from kept')
    assert.deepEqual(rows, [{ v: 'before the crash' }])
  })

  it('keeps an in-memory instance not ready (never hanging) when its worker dies', async () => {
    const plinth = await startTestPlinth()
    instances.push(plinth)
    const embedded = plinth.db.embedded
    assert.ok(embedded)
    await embedded.worker()?.terminate()
    await assert.rejects(embedded.whenUp(), /in-memory database is lost/)
    const res = await plinth.app.inject('/ready')
    assert.equal(res.statusCode, 503)
    await assert.rejects(plinth.db.pool.query('select 1'))
  })

  it('starts a new data directory from the cached template, and reopens it as existing', async () => {
    const dataDir = tempDir()
    const first = await startTestPlinth({ env: { PLINTH_DATA_DIR: dataDir } })
    // The suite's first embedded start builds the template; every later new cluster loads it, the
    // migrated one once a start with the same migration set has cached it.
    assert.ok(
      ['copied', 'migrated', 'template'].includes(first.db.embedded?.origin() ?? ''),
      first.db.embedded?.origin(),
    )
    await first.close()
    const again = await startTestPlinth({ env: { PLINTH_DATA_DIR: dataDir } })
    instances.push(again)
    assert.equal(again.db.embedded?.origin(), 'existing')
  })

  it('starts a new cluster already migrated once the same migration set was applied on another', async () => {
    const first = await startTestPlinth({ env: { PLINTH_DATA_DIR: tempDir() } })
    const applied = (await first.migrator.status()).map((m) => m.name)
    await first.close()
    // The first start cached the migrated cluster (or found it cached): a new one loads it.
    const second = await startTestPlinth({ env: { PLINTH_DATA_DIR: tempDir() } })
    instances.push(second)
    assert.ok(
      ['copied', 'migrated'].includes(second.db.embedded?.origin() ?? ''),
      second.db.embedded?.origin(),
    )
    assert.equal(await second.migrator.pendingCount(), 0)
    const status = await second.migrator.status()
    assert.deepEqual(
      status.map((m) => m.name),
      applied,
    )
    assert.ok(status.every((m) => m.appliedAt !== null))
    // The template holds the schema only: no data key, no user of the first instance.
    const { rows } = await second.db.pool.query(
      'select (select count(*) from users)::int as users, (select count(*) from encryption_keys)::int as keys',
    )
    // The instance made its own data key after migrating; none came from the template.
    assert.equal(rows[0].users, 0)
    assert.ok(rows[0].keys <= 1)
  })

  it('an exit that skips the close (a forced exit) still removes the socket directory in the temporary folder', () => {
    // An in-memory instance keeps its socket in a directory of its own under the temporary folder.
    // A file, not --input-type=module -e: the worker thread inherits the flags, which a file refuses.
    const script = join(tempDir(), 'forced-exit.mjs')
    writeFileSync(
      script,
      `import pino from ${JSON.stringify(import.meta.resolve('pino'))}
      import { startEmbeddedServer } from ${JSON.stringify(new URL('../src/infra/db/embedded-server.ts', import.meta.url).href)}
      const server = startEmbeddedServer({ dataDir: null, logger: pino({ level: 'silent' }), maxConnections: 2, startTimeoutMs: 60000 })
      await server.whenUp()
      console.log(server.socketDir)
      process.exit(3)
      `,
    )
    const run = spawnSync(process.execPath, [script], {
      cwd: new URL('..', import.meta.url),
      encoding: 'utf8',
      timeout: 120_000,
    })
    assert.equal(run.status, 3, run.stderr)
    const socketDir = run.stdout.trim().split('\n').at(-1)!
    assert.ok(socketDir.startsWith(tmpdir()), `not in the temporary folder: "${socketDir}"`)
    assert.equal(existsSync(socketDir), false, `${socketDir} outlived the process`)
  })

  it('lets the CLI work through the running server’s socket instead of failing with PLINTH_DB_LOCKED', async () => {
    const dataDir = tempDir()
    // This process holds the data directory, as `plinth start` would.
    const server = await startTestPlinth({ env: { PLINTH_DATA_DIR: dataDir } })
    instances.push(server)
    const env = { PLINTH_ENV: 'test', PLINTH_DATA_DIR: dataDir, PLINTH_LOG_LEVEL: 'warn' }

    const status = await spawnCli(['migrate', 'status'], env)
    assert.equal(status.code, 0, status.err)
    assert.doesNotMatch(status.err, /PLINTH_DB_LOCKED/)

    const created = await spawnCli(['user', 'create', '--admin', '--email', 'cli@example.com'], env, {
      stdin: 'a-long-enough-passphrase-7\n',
    })
    assert.equal(created.code, 0, created.err)
    // The server sees the row the CLI wrote, and still holds its lock.
    const { rows } = await server.db.pool.query(`select email from users where email = 'cli@example.com'`)
    assert.equal(rows.length, 1)
    assert.equal((await server.app.inject('/ready')).statusCode, 200)
  })
})
