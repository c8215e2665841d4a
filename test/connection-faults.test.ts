/**
 * The connection-fault suite (issue #9, "keep it found"): PostgreSQL and Redis connections reset,
 * half-open (nothing gets through, nothing closes) and slow, through a TCP proxy, while requests
 * run. Whatever happens: the process never exits, every failed request is a 503
 * `application/problem+json` with `Retry-After`, no request hangs past the configured timeouts,
 * and everything recovers without a restart (checked by polling with a deadline).
 */
import assert from 'node:assert/strict'
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process'
import { join } from 'node:path'
import { after, afterEach, describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import type { InjectOptions } from 'fastify'
import pg from 'pg'
import { dbProbeModule, PROBE_TABLE_SQL } from './fixtures/serve-with-db-probe.ts'
import { createUser } from './helpers/accounts.ts'
import { captureLogs } from './helpers/log-capture.ts'
import { teeChildLogs } from './helpers/run-logs.ts'
import { skipUnlessPostgres, skipUnlessRedis, TEST_DATABASE_URL, TEST_REDIS_URL } from './helpers/services.ts'
import { startTcpProxy } from './helpers/tcp-proxy.ts'
import { testConfig } from './helpers/test-config.ts'
import { createTestDatabase, type TestDatabase } from './helpers/test-database.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const NODE = join(ROOT, 'node_modules/.bin/node')
const pgAddress = new URL(TEST_DATABASE_URL)
const pgTarget = { host: pgAddress.hostname, port: Number(pgAddress.port || 5432) }
const redisAddress = new URL(TEST_REDIS_URL)
const redisTarget = { host: redisAddress.hostname, port: Number(redisAddress.port || 6379) }

/** Cleanups registered by each test, run in reverse order even when the test fails. */
const cleanups: (() => Promise<unknown> | unknown)[] = []
const cleanupAll = async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn()
}

/** Polls `probe` every 100 ms until it returns true; fails after `deadlineMs`. */
async function waitFor(what: string, probe: () => Promise<boolean> | boolean, deadlineMs = 20_000) {
  const until = performance.now() + deadlineMs
  while (!(await probe())) {
    if (performance.now() > until) assert.fail(`${what}: not within ${deadlineMs} ms`)
    await sleep(100)
  }
}

/** One answer as the suite judges it. */
interface Outcome {
  readonly what: string
  readonly status: number
  readonly contentType: string
  readonly retryAfter: string | undefined
  readonly body: string
  readonly ms: number
}

/** `what` failed unless it answered `ok`, or 503 problem+json with a positive Retry-After. */
function judge(outcomes: readonly Outcome[], ok: readonly number[]): { ok: number; unavailable: number } {
  const bad = outcomes.filter(
    (o) =>
      !ok.includes(o.status) &&
      !(
        o.status === 503 &&
        o.contentType.startsWith('application/problem+json') &&
        Number(o.retryAfter) > 0 &&
        /"code":"PLINTH_[A-Z_]+"/.test(o.body)
      ),
  )
  assert.deepEqual(
    bad
      .slice(0, 5)
      .map((o) => `${o.what} → ${o.status} ${o.contentType} retry-after=${o.retryAfter} ${o.body}`),
    [],
    `${bad.length} of ${outcomes.length} answers were neither ${ok.join('/')} nor a 503 problem+json with Retry-After`,
  )
  return {
    ok: outcomes.filter((o) => ok.includes(o.status)).length,
    unavailable: outcomes.filter((o) => o.status === 503).length,
  }
}

/**
 * Sends `next()`'s request `rate` times a second for `durationMs` (bounded: at most 400 in flight),
 * and resolves with every outcome once all have answered.
 */
async function load(
  send: (i: number) => Promise<Outcome>,
  rate: number,
  durationMs: number,
): Promise<Outcome[]> {
  const pending: Promise<Outcome>[] = []
  let inFlight = 0
  const started = performance.now()
  for (let i = 0; performance.now() - started < durationMs; i++) {
    const due = started + (i * 1000) / rate
    const wait = due - performance.now()
    if (wait > 0) await sleep(wait)
    if (inFlight >= 400) continue
    inFlight++
    pending.push(send(i).finally(() => inFlight--))
  }
  return Promise.all(pending)
}

/** An HTTP request over the loopback (a fresh fetch each, keep-alive pooled by undici). */
async function fetchOutcome(base: string, path: string, init: RequestInit = {}): Promise<Outcome> {
  const started = performance.now()
  try {
    const res = await fetch(new URL(path, base), { ...init, signal: AbortSignal.timeout(30_000) })
    return {
      what: `${init.method ?? 'GET'} ${path}`,
      status: res.status,
      contentType: res.headers.get('content-type') ?? '',
      retryAfter: res.headers.get('retry-after') ?? undefined,
      body: await res.text(),
      ms: performance.now() - started,
    }
  } catch (err) {
    // A refused or dropped connection: the process is gone (or hung past 30 s).
    return {
      what: `${init.method ?? 'GET'} ${path}`,
      status: 0,
      contentType: '',
      retryAfter: undefined,
      body: String((err as Error).cause ?? err),
      ms: performance.now() - started,
    }
  }
}

/** `app.inject` as an outcome. */
async function injectOutcome(
  app: TestPlinth['app'],
  options: InjectOptions & { url: string },
): Promise<Outcome> {
  const started = performance.now()
  const res = await app.inject(options)
  return {
    what: `${options.method ?? 'GET'} ${options.url}`,
    status: res.statusCode,
    contentType: String(res.headers['content-type'] ?? ''),
    retryAfter: res.headers['retry-after'] === undefined ? undefined : String(res.headers['retry-after']),
    body: res.body,
    ms: performance.now() - started,
  }
}

interface Child {
  readonly proc: ChildProcessWithoutNullStreams
  lines(): Record<string, unknown>[]
  output(): string
  alive(): boolean
  listening(): Promise<string>
}

/** Starts the probe fixture as a real process (the way `plinth start` runs) with `env`. */
function startChild(env: Record<string, string>): Child {
  const proc = spawn(NODE, ['test/fixtures/serve-with-db-probe.ts'], {
    cwd: ROOT,
    env: {
      PATH: process.env.PATH ?? '',
      PLINTH_ENV: 'test',
      PORT: '0',
      HOST: '127.0.0.1',
      PLINTH_MAX_EVENT_LOOP_DELAY: '0',
      PLINTH_LOG_FORMAT: 'json',
      PLINTH_LOG_LEVEL: 'info',
      ...env,
    },
  })
  let out = ''
  let err = ''
  proc.stdout.on('data', (d) => (out += d))
  proc.stderr.on('data', (d) => (err += d))
  teeChildLogs(proc, env)
  const lines = () =>
    out
      .split('\n')
      .slice(0, -1)
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>)
  const alive = () => proc.exitCode === null && proc.signalCode === null
  cleanups.push(async () => {
    if (!alive()) return
    const exited = new Promise((resolve) => proc.once('exit', resolve))
    proc.kill('SIGTERM')
    const timer = setTimeout(() => proc.kill('SIGKILL'), 15_000)
    await exited
    clearTimeout(timer)
  })
  return {
    proc,
    lines,
    output: () => `${out}\n${err}`,
    alive,
    async listening() {
      let address: unknown
      await waitFor(
        'plinth listening',
        () => {
          if (!alive()) assert.fail(`exited (${proc.exitCode ?? proc.signalCode}) first:\n${out}\n${err}`)
          address = lines().find((l) => l.msg === 'plinth listening')?.address
          return address !== undefined
        },
        90_000,
      )
      return String(address)
    },
  }
}

async function probeDatabase(): Promise<{ db: TestDatabase; admin: pg.Pool }> {
  const db = await createTestDatabase()
  cleanups.push(() => db.drop())
  const admin = new pg.Pool({ connectionString: db.url, max: 2 })
  admin.on('error', () => {})
  cleanups.push(() => admin.end())
  await admin.query(PROBE_TABLE_SQL)
  return { db, admin }
}

const fatal = (c: Child) => c.lines().filter((l) => l.level === 60 || l.msg === 'uncaught error, exiting')

const redisSkip = await skipUnlessRedis()

describe('connection faults', { skip: await skipUnlessPostgres() }, () => {
  afterEach(cleanupAll)
  after(cleanupAll)

  it('PostgreSQL connections reset mid-query under load: the api and worker processes stay up, answer 503 and recover', async (t) => {
    const { db, admin } = await probeDatabase()
    const proxy = await startTcpProxy(pgTarget)
    cleanups.push(() => proxy.close())
    const env = {
      DATABASE_URL: proxy.through(db.url),
      PLINTH_DB_CONNECT_TIMEOUT: '2s',
      PLINTH_JOBS_POLL_INTERVAL: '500ms',
      // A job whose completion was lost with its connection is given back after its lease: keep it short.
      PLINTH_JOBS_LEASE: '10s',
      PLINTH_JOBS_MONITOR_INTERVAL: '1s',
    }
    // One after the other: the first applies the migrations.
    const api = startChild({ ...env, PLINTH_ROLE: 'api' })
    const apiBase = await api.listening()
    const worker = startChild({ ...env, PLINTH_ROLE: 'worker' })
    const workerBase = await worker.listening()

    const t0 = performance.now()
    const mark = (what: string) => t.diagnostic(`${what} at ${Math.round(performance.now() - t0)} ms`)
    const accepted = new Set<number>()
    const faults = (async () => {
      await sleep(700)
      proxy.resetAll()
      await sleep(600)
      proxy.setMode('reset-mid-query')
      await sleep(500)
      proxy.restore()
      await sleep(600)
      proxy.resetAll()
    })()
    // ~150 requests/s for 3.5 s: two thirds short transactions, one third enqueues for the worker,
    // and the worker's /ready (which asks the database) on the side.
    const [outcomes, workerOutcomes] = await Promise.all([
      load(
        async (i) => {
          if (i % 3 !== 2) return fetchOutcome(apiBase, '/api/v1/test/db-work')
          const o = await fetchOutcome(apiBase, '/api/v1/test/enqueue', {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ n: i }),
          })
          if (o.status === 202) accepted.add(i)
          return o
        },
        150,
        3500,
      ),
      load(() => fetchOutcome(workerBase, '/ready'), 10, 3500),
      faults,
    ])
    mark('load done')
    assert.ok(proxy.resets >= 3, `only ${proxy.resets} connections were reset: the fault did not happen`)

    assert.deepEqual(fatal(api), [], 'the api process logged a fatal error')
    assert.deepEqual(fatal(worker), [], 'the worker process logged a fatal error')
    assert.ok(api.alive(), `the api process exited:\n${api.output().slice(-3000)}`)
    assert.ok(worker.alive(), `the worker process exited:\n${worker.output().slice(-3000)}`)
    const counts = judge(outcomes, [200, 202])
    t.diagnostic(
      `${outcomes.length} requests: ${counts.ok} answered, ${counts.unavailable} got 503; ${proxy.resets} connections reset`,
    )
    assert.ok(counts.ok > 0, 'no request succeeded at all')
    // /ready answers its own body (not a problem): 200, or 503 naming what is down.
    for (const o of workerOutcomes)
      assert.ok(
        o.status === 200 || (o.status === 503 && JSON.parse(o.body).status === 'down'),
        `${o.status} ${o.body}`,
      )

    // Recovery without restart: the api answers, both are ready, every accepted job gets done.
    await waitFor(
      'api answers again',
      async () => (await fetchOutcome(apiBase, '/api/v1/test/db-work')).status === 200,
    )
    await waitFor('api ready', async () => (await fetchOutcome(apiBase, '/ready')).status === 200)
    await waitFor('worker ready', async () => (await fetchOutcome(workerBase, '/ready')).status === 200)
    mark('ready')
    const more = await fetchOutcome(apiBase, '/api/v1/test/enqueue', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ n: 1_000_000 }),
    })
    assert.equal(more.status, 202, more.body)
    accepted.add(1_000_000)
    await waitFor(
      `all ${accepted.size} accepted jobs done by the worker`,
      async () => {
        const { rows } = await admin.query<{ n: number }>('select n from probe_done')
        const done = new Set(rows.map((r) => r.n))
        return [...accepted].every((n) => done.has(n))
      },
      60_000,
    )
    mark('jobs done')
    assert.ok(api.alive() && worker.alive(), 'a process exited during recovery')
  })

  describe('in process', () => {
    /** A prepared Plinth (all roles) on a fresh database reached through a proxy. */
    async function throughProxy(env: Record<string, string>) {
      const db = await createTestDatabase()
      cleanups.push(() => db.drop())
      const proxy = await startTcpProxy(pgTarget)
      cleanups.push(() => proxy.close())
      const config = testConfig({
        DATABASE_URL: proxy.through(db.url),
        PLINTH_MAX_EVENT_LOOP_DELAY: '0',
        PLINTH_DB_CONNECT_TIMEOUT: '1s',
        PLINTH_DB_STATEMENT_TIMEOUT: '500ms',
        PLINTH_DB_QUERY_TIMEOUT: '1s',
        PLINTH_HEALTH_TIMEOUT: '1s',
        ...env,
      })
      const logs = captureLogs(config)
      const plinth = await startTestPlinth({ config, logger: logs.logger, modules: [dbProbeModule] })
      cleanups.push(() => plinth.close())
      return { proxy, plinth, logs }
    }
    const probe = (plinth: TestPlinth, i: number) =>
      injectOutcome(plinth.app, { url: i % 2 ? '/api/v1/test/db-work' : '/api/v1/test/db-read' })
    const answers = async (plinth: TestPlinth) => (await probe(plinth, 1)).status === 200
    const ready = async (plinth: TestPlinth) => (await plinth.app.inject('/ready')).statusCode === 200

    it('PostgreSQL reset mid-query under load: 503s while it lasts, then answers again', async () => {
      const { proxy, plinth } = await throughProxy({})
      assert.ok(await answers(plinth))
      const faults = (async () => {
        await sleep(300)
        proxy.setMode('reset-mid-query')
        await sleep(400)
        proxy.restore()
        await sleep(300)
        proxy.resetAll()
      })()
      const [outcomes] = await Promise.all([load((i) => probe(plinth, i), 150, 1500), faults])
      assert.ok(proxy.resets >= 1, 'nothing was reset')
      const counts = judge(outcomes, [200])
      assert.ok(counts.unavailable > 0, 'no request was hit: the fault did not happen')
      await waitFor('answers again', () => answers(plinth))
      await waitFor('ready again', () => ready(plinth))
    })

    it('half-open PostgreSQL: requests end within the timeouts with 503, /ready says down, and it recovers', async (t) => {
      const { proxy, plinth } = await throughProxy({})
      assert.ok(await answers(plinth))
      proxy.setMode('half-open')
      const outcomes = await load((i) => probe(plinth, i), 50, 1500)
      const slowest = Math.max(...outcomes.map((o) => o.ms))
      t.diagnostic(
        `${outcomes.length} requests while half-open, slowest answered after ${Math.round(slowest)} ms`,
      )
      const counts = judge(outcomes, [200])
      assert.equal(counts.unavailable, outcomes.length, 'a request got through a silent network')
      // PLINTH_DB_CONNECT_TIMEOUT (waiting for a connection) + PLINTH_DB_QUERY_TIMEOUT, with slack.
      assert.ok(slowest < 6000, `a request hung for ${Math.round(slowest)} ms`)
      const started = performance.now()
      const readiness = await plinth.app.inject('/ready')
      assert.equal(readiness.statusCode, 503)
      assert.ok(performance.now() - started < 4000, 'the readiness check hung')

      proxy.restore()
      await waitFor('answers again', () => answers(plinth))
      await waitFor('ready again', () => ready(plinth))
    })

    it('connections stranded for good (server gone without a word): the pool drops them after PLINTH_DB_QUERY_TIMEOUT and recovers', async () => {
      const { proxy, plinth } = await throughProxy({ PLINTH_DB_POOL_MAX: '4' })
      // Fill the pool with open connections, then strand them all.
      const warm = await Promise.all(Array.from({ length: 8 }, (_, i) => probe(plinth, i)))
      judge(warm, [200])
      assert.ok(proxy.connections >= 2, `only ${proxy.connections} connections to strand`)
      proxy.strand()
      // Shutting down waits for the stranded connections' goodbyes: cut them first.
      cleanups.push(() => proxy.close())
      const failed: Outcome[] = []
      let inARow = 0
      await waitFor(
        '20 answers in a row',
        async () => {
          const o = await probe(plinth, 0)
          if (o.status !== 200) failed.push(o)
          inARow = o.status === 200 ? inARow + 1 : 0
          return inARow >= 20
        },
        20_000,
      )
      judge(failed, [])
      assert.ok(failed.length > 0, 'no request met a stranded connection: the fault did not happen')
    })

    it('slow PostgreSQL (each chunk delayed): every request answers, in time or with 503, and speed comes back', async () => {
      const { proxy, plinth } = await throughProxy({})
      assert.ok(await answers(plinth))
      proxy.setMode('slow', 150)
      const outcomes = await load((i) => probe(plinth, i), 50, 1500)
      judge(outcomes, [200])
      const slowest = Math.max(...outcomes.map((o) => o.ms))
      assert.ok(slowest < 6000, `a request hung for ${Math.round(slowest)} ms`)
      proxy.restore()
      await waitFor('fast answers again', async () => {
        const o = await probe(plinth, 1)
        return o.status === 200 && o.ms < 300
      })
      await waitFor('ready again', () => ready(plinth))
    })
  })

  describe('of Redis', { skip: redisSkip }, () => {
    it('reset, half-open and slow Redis under load: authenticated requests still answer 200 in bounded time; Redis comes back by itself', async (t) => {
      const proxy = await startTcpProxy(redisTarget)
      cleanups.push(() => proxy.close())
      const prefix = `plinth-test:${process.pid}:faults:`
      const plinth = await startTestPlinth({
        env: {
          REDIS_URL: proxy.through(TEST_REDIS_URL),
          PLINTH_REDIS_PREFIX: prefix,
          PLINTH_REDIS_COMMAND_TIMEOUT: '300ms',
          PLINTH_MAX_EVENT_LOOP_DELAY: '0',
          PLINTH_RATE_LIMIT_API: '100000',
        },
      })
      cleanups.push(() => plinth.close())
      const session = await createUser(plinth, `faults-${process.pid}@example.test`, 'member')
      const me = () =>
        injectOutcome(plinth.app, {
          url: '/api/v1/me',
          headers: { authorization: `Bearer ${session.token}` },
        })
      const redisUp = async () => {
        const res = await plinth.app.inject('/health')
        return res.json().components.redis?.status === 'up'
      }
      assert.equal((await me()).status, 200)
      await waitFor('redis up', redisUp)

      for (const fault of ['reset', 'half-open', 'slow'] as const) {
        const faults = (async () => {
          await sleep(200)
          if (fault === 'reset') {
            proxy.resetAll()
            await sleep(300)
            proxy.setMode('reset-mid-query')
            await sleep(300)
          } else if (fault === 'half-open') {
            proxy.setMode('half-open')
            await sleep(900)
          } else {
            proxy.setMode('slow', 200)
            await sleep(900)
          }
          proxy.restore()
        })()
        const [outcomes] = await Promise.all([load(() => me(), 100, 1500), faults])
        const slowest = Math.max(...outcomes.map((o) => o.ms))
        t.diagnostic(`redis ${fault}: ${outcomes.length} requests, slowest ${Math.round(slowest)} ms`)
        // Redis holds only what can be lost: its faults cost no request anything but a little time.
        const counts = judge(outcomes, [200])
        assert.equal(counts.unavailable, 0, `redis ${fault}: requests failed although Redis is optional`)
        assert.ok(slowest < 3000, `redis ${fault}: a request took ${Math.round(slowest)} ms`)
        await waitFor(`redis up again after ${fault}`, redisUp)
      }
    })
  })
})
