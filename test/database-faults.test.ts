import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { after, afterEach, describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { sql } from 'kysely'
import pg from 'pg'
import { createPlinth, type Plinth } from '../src/app/create-plinth.ts'
import { builtinModules } from '../src/app/modules.ts'
import type { PlinthModule } from '../src/core/module.ts'
import { newSecret, TOKEN_PREFIX } from '../src/modules/accounts/secrets.ts'
import { isPlinthError } from '../src/shared/errors.ts'
import { captureLogs } from './helpers/log-capture.ts'
import { teeChildLogs } from './helpers/run-logs.ts'
import { skipUnlessPostgres, TEST_DATABASE_URL } from './helpers/services.ts'
import { startTcpProxy, type TcpProxy } from './helpers/tcp-proxy.ts'
import { testConfig } from './helpers/test-config.ts'
import { createTestDatabase } from './helpers/test-database.ts'
import { startTestPlinth } from './helpers/test-plinth.ts'

/** Trust auth ignores it, so it may sit in every URL: it must never reach a log line or a message. */
const PASSWORD = 'pw-never-logged-7f3a9c'
const withPassword = (url: string) => {
  const u = new URL(url)
  u.password = PASSWORD
  return u.toString()
}
const pgAddress = new URL(TEST_DATABASE_URL)
const pgTarget = { host: pgAddress.hostname, port: Number(pgAddress.port || 5432) }

/** Application routes that use the database the way a module would. */
const dbProbe: PlinthModule = {
  name: 'db-probe',
  routes(api, ctx) {
    api.get('/test/db', { config: { public: true } }, async () => {
      const { rows } = await sql<{ one: number }>`select 1 as one`.execute(ctx.db.kysely)
      return { one: rows[0]?.one }
    })
    api.get('/test/db-sleep', { config: { public: true } }, async () => {
      await sql`select pg_sleep(1)`.execute(ctx.db.kysely)
      return { slept: true }
    })
  },
}
const modules = [...builtinModules, dbProbe]

/** Polls `probe` every 100 ms until it returns true; fails after `deadlineMs`. */
async function waitFor(what: string, probe: () => Promise<boolean> | boolean, deadlineMs = 10_000) {
  const until = performance.now() + deadlineMs
  while (!(await probe())) {
    if (performance.now() > until) assert.fail(`${what}: not within ${deadlineMs} ms`)
    await sleep(100)
  }
}

/** Cleanups registered by each test, run in reverse order even when the test fails. */
const cleanups: (() => Promise<unknown> | unknown)[] = []
const cleanupAll = async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn()
}

async function setup(env: Record<string, string>, cut: boolean) {
  const db = await createTestDatabase()
  cleanups.push(() => db.drop())
  const proxy: TcpProxy = await startTcpProxy(pgTarget)
  cleanups.push(() => proxy.close())
  if (cut) proxy.cut()
  const config = testConfig({ DATABASE_URL: withPassword(proxy.through(db.url)), ...env })
  const logs = captureLogs(config)
  const plinth: Plinth = await createPlinth({ config, logger: logs.logger, modules })
  cleanups.push(() => plinth.shutdown())
  return { proxy, logs, plinth }
}

describe('database faults', { skip: await skipUnlessPostgres() }, () => {
  afterEach(cleanupAll)
  after(cleanupAll)

  it('when the database is down at boot, prepare() retries with backoff and starts once it comes up', async () => {
    const { proxy, logs, plinth } = await setup(
      { PLINTH_DB_CONNECT_DEADLINE: '10s', PLINTH_DB_CONNECT_TIMEOUT: '1s' },
      true,
    )
    const restore = setTimeout(() => proxy.restore(), 1000)
    cleanups.push(() => clearTimeout(restore))
    const started = performance.now()
    await plinth.prepare()
    assert.ok(performance.now() - started >= 900, 'prepare() resolved before the database came back')

    const retries = logs.lines().filter((l) => l.msg === 'database not reachable, retrying')
    assert.ok(retries.length >= 1, 'no retry was logged')
    retries.forEach((line, i) => {
      assert.equal(line.level, 'warn')
      assert.equal(line.attempt, i + 1)
      assert.equal(typeof line.delayMs, 'number')
      assert.match(String(line.target), new RegExp(`:\\*\\*\\*\\*@127\\.0\\.0\\.1:${proxy.port}/`))
    })
    assert.ok(!logs.text().includes(PASSWORD), 'the password reached the log')
    assert.equal(await plinth.migrator.pendingCount(), 0)
    const { rows } = await sql<{ n: number }>`select count(*)::int as n from plinth_migrations`.execute(
      plinth.db.kysely,
    )
    assert.ok(rows[0]!.n >= 1, 'no migration was applied')
    assert.equal((await plinth.app.inject('/ready')).statusCode, 200)
  })

  it('when the database stays down past PLINTH_DB_CONNECT_DEADLINE, prepare() rejects with PLINTH_DB_UNREACHABLE', async () => {
    const { proxy, logs, plinth } = await setup(
      { PLINTH_DB_CONNECT_DEADLINE: '1500ms', PLINTH_DB_CONNECT_TIMEOUT: '1s' },
      true,
    )
    const started = performance.now()
    const err = await plinth.prepare().then(
      () => assert.fail('prepare() resolved without a database'),
      (e: unknown) => e,
    )
    const elapsed = performance.now() - started
    assert.ok(elapsed >= 1400 && elapsed < 5000, `gave up after ${Math.round(elapsed)} ms`)
    assert.ok(isPlinthError(err), String(err))
    assert.equal(err.code, 'PLINTH_DB_UNREACHABLE')
    assert.ok(err.message.includes(`postgres://postgres:****@127.0.0.1:${proxy.port}/`), err.message)
    const attempts = Number(/\((\d+) attempts/.exec(err.message)?.[1])
    assert.ok(attempts >= 2, err.message)
    assert.match(err.message, /DATABASE_URL/)
    assert.match(err.message, /PLINTH_DB_CONNECT_DEADLINE/)
    assert.ok(!err.message.includes(PASSWORD) && !logs.text().includes(PASSWORD), 'the password leaked')
  })

  it('`plinth start` exits non-zero with a clear message when the database cannot be reached', async () => {
    const child = spawn('node_modules/.bin/node', ['src/main.ts', 'start'], {
      env: {
        PATH: process.env.PATH ?? '',
        PLINTH_ENV: 'test',
        PORT: '0',
        DATABASE_URL: `postgres://plinth:${PASSWORD}@127.0.0.1:1/plinth`,
        PLINTH_DB_CONNECT_DEADLINE: '1s',
        PLINTH_LOG_FORMAT: 'json',
      },
    })
    const kill = setTimeout(() => child.kill('SIGKILL'), 20_000)
    cleanups.push(() => {
      clearTimeout(kill)
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    })
    let out = ''
    let err = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (err += d))
    teeChildLogs(child)
    const [code, signal] = (await new Promise((resolve) => child.on('exit', (...args) => resolve(args)))) as [
      number | null,
      string | null,
    ]
    assert.equal(signal, null, 'killed after 20 s: the process did not give up')
    assert.equal(code, 1, err)
    assert.match(
      err,
      /plinth start: Could not connect to the database at postgres:\/\/plinth:\*\*\*\*@127\.0\.0\.1:1\/plinth/,
    )
    assert.match(err, /\[PLINTH_DB_UNREACHABLE\]/)
    assert.match(err, /DATABASE_URL[\s\S]*PLINTH_DB_CONNECT_DEADLINE/)
    assert.ok(!out.includes(PASSWORD) && !err.includes(PASSWORD), 'the password leaked')
  })

  it('a database outage while running answers 503 without crashing, and recovers by itself', async () => {
    const { proxy, logs, plinth } = await setup(
      { PLINTH_HEALTH_TIMEOUT: '1s', PLINTH_DB_CONNECT_TIMEOUT: '1s', PLINTH_DB_CONNECT_DEADLINE: '5s' },
      false,
    )
    await plinth.prepare()
    const { app } = plinth
    assert.equal((await app.inject('/ready')).statusCode, 200)
    assert.equal((await app.inject('/api/v1/test/db')).statusCode, 200)
    assert.ok(plinth.db.pool.listenerCount('error') >= 1, 'the pool has no error listener')
    assert.ok(plinth.db.poolStats().idle >= 1, 'no idle connection to lose')

    proxy.cut()
    // The idle connections die under the pool: its 'error' event is logged, not thrown.
    await waitFor('idle connection error logged', () =>
      logs.lines().some((l) => l.msg === 'idle database connection lost'),
    )

    let started = performance.now()
    const ready = await app.inject('/ready')
    assert.ok(performance.now() - started < 2500, 'the readiness check outlived its timeout')
    assert.equal(ready.statusCode, 503)
    assert.ok(
      (ready.json().failing as { component: string }[]).some((f) => f.component === 'database'),
      ready.body,
    )
    const health = await app.inject('/health')
    assert.equal(health.statusCode, 503)
    assert.equal(health.json().status, 'down')
    assert.equal(health.json().components.database.status, 'down')

    started = performance.now()
    const route = await app.inject('/api/v1/test/db')
    assert.ok(performance.now() - started < 2500, 'the route hung on the outage')
    assert.equal(route.statusCode, 503, route.body)
    assert.match(String(route.headers['content-type']), /^application\/problem\+json/)
    assert.equal(route.json().code, 'PLINTH_DB_UNAVAILABLE')
    assert.ok(Number(route.headers['retry-after']) > 0, 'no Retry-After')

    proxy.restore()
    await waitFor('/ready back to 200', async () => (await app.inject('/ready')).statusCode === 200)
    const again = await app.inject('/api/v1/test/db')
    assert.equal(again.statusCode, 200, again.body)
    assert.deepEqual(again.json(), { one: 1 })
    assert.ok(!logs.text().includes(PASSWORD), 'the password reached the log')
  })

  it('a statement over PLINTH_DB_STATEMENT_TIMEOUT answers 503 PLINTH_DB_TIMEOUT', async () => {
    const plinth = await startTestPlinth({
      backend: 'postgres',
      env: { PLINTH_DB_STATEMENT_TIMEOUT: '200ms' },
      modules: [dbProbe],
    })
    cleanups.push(() => plinth.close())
    const started = performance.now()
    const res = await plinth.app.inject('/api/v1/test/db-sleep')
    assert.ok(performance.now() - started < 900, 'the statement was not cut at its timeout')
    assert.equal(res.statusCode, 503, res.body)
    assert.equal(res.json().code, 'PLINTH_DB_TIMEOUT')
    assert.ok(Number(res.headers['retry-after']) > 0, 'no Retry-After')
  })

  it('during an outage, the operations routes answer without looking up the credentials sent with them', async () => {
    const { proxy, plinth } = await setup(
      { PLINTH_HEALTH_TIMEOUT: '1s', PLINTH_DB_CONNECT_TIMEOUT: '1s', PLINTH_DB_CONNECT_DEADLINE: '5s' },
      false,
    )
    await plinth.prepare()
    proxy.cut()
    // Well-formed but unknown: resolving either would need the database.
    const session = newSecret(TOKEN_PREFIX.session).secret
    for (const token of [session, newSecret(TOKEN_PREFIX.apiToken).secret]) {
      const headers = { authorization: `Bearer ${token}` }
      const cookie = { cookie: `plinth_session=${token}` }
      for (const h of [headers, cookie]) {
        const live = await plinth.app.inject({ url: '/live', headers: h })
        assert.equal(live.statusCode, 200, live.body)
        const ready = await plinth.app.inject({ url: '/ready', headers: h })
        assert.equal(ready.statusCode, 503, ready.body)
        assert.equal(ready.json().status, 'down')
        const health = await plinth.app.inject({ url: '/health', headers: h, remoteAddress: '203.0.113.9' })
        assert.equal(health.statusCode, 503, health.body)
        assert.equal(health.json().status, 'down')
        const metrics = await plinth.app.inject({
          url: '/api/metrics',
          headers: h,
          remoteAddress: '203.0.113.9',
        })
        assert.equal(metrics.statusCode, 403, metrics.body)
        const fromLoopback = await plinth.app.inject({ url: '/api/metrics', headers: h })
        assert.equal(fromLoopback.statusCode, 200, fromLoopback.body)
      }
    }
    // An application route still needs the lookup: 503 with Retry-After, not 500.
    const route = await plinth.app.inject({
      url: '/api/v1/me',
      headers: { authorization: `Bearer ${session}` },
    })
    assert.equal(route.statusCode, 503, route.body)
    assert.ok(Number(route.headers['retry-after']) > 0, 'no Retry-After')
  })

  it('a database that refuses connections (SQLSTATE 55000, not accepting connections) answers 503, and recovers', async () => {
    const db = await createTestDatabase()
    cleanups.push(() => db.drop())
    const config = testConfig({
      DATABASE_URL: db.url,
      PLINTH_DB_CONNECT_TIMEOUT: '1s',
      PLINTH_HEALTH_TIMEOUT: '1s',
    })
    const plinth = await createPlinth({ config, logger: captureLogs(config).logger, modules })
    cleanups.push(() => plinth.shutdown())
    await plinth.prepare()
    assert.equal((await plinth.app.inject('/api/v1/test/db')).statusCode, 200)

    const admin = new pg.Client({ connectionString: TEST_DATABASE_URL })
    await admin.connect()
    cleanups.push(() => admin.end())
    const allow = (on: boolean) => admin.query(`alter database ${db.name} with allow_connections ${on}`)
    cleanups.push(() => allow(true))
    await allow(false)
    // Its open connections go (57P01), and new ones are refused with 55000.
    await admin.query('select pg_terminate_backend(pid) from pg_stat_activity where datname = $1', [db.name])

    await waitFor('a refused connection', async () => {
      const res = await plinth.app.inject('/api/v1/test/db')
      assert.notEqual(res.statusCode, 500, res.body)
      if (res.statusCode === 200) return false
      assert.equal(res.statusCode, 503, res.body)
      assert.equal(res.json().code, 'PLINTH_DB_UNAVAILABLE')
      assert.ok(Number(res.headers['retry-after']) > 0, 'no Retry-After')
      return (res.json().requestId as string).length > 0
    })
    // A loaded machine may first time out connecting (PLINTH_DB_CONNECT_TIMEOUT): ask until refused.
    let refused: { code?: string } = {}
    await waitFor('a connection refused with 55000', async () => {
      refused = await plinth.db.pool.query('select 1').then(
        () => assert.fail('the database accepted a connection'),
        (e: { code?: string }) => e,
      )
      return refused.code === '55000'
    })
    assert.equal(refused.code, '55000')
    assert.equal((await plinth.app.inject('/ready')).statusCode, 503)

    await allow(true)
    await waitFor(
      'answers again',
      async () => (await plinth.app.inject('/api/v1/test/db')).statusCode === 200,
    )
  })
})
