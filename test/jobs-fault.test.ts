/**
 * Job delivery under worker crashes, with real worker processes (test/helpers/job-worker.ts) on a
 * real PostgreSQL database:
 * - a fleet of workers works through 2,000 jobs while the driver SIGKILLs a random worker about
 *   every second, 50 times or more, starting a replacement each time: every job completes, none is
 *   lost, and the duplicated side effects (at-least-once delivery) are counted and bounded;
 * - a worker killed with kill -9 in the middle of a long job gives it back within the lease plus the
 *   monitor interval, and another worker runs it to completion.
 *
 * Handlers are expected to be idempotent. Here `fault.work` records its effect twice: once in
 * `fault_effects` without any key, which counts every duplicate, and once in `fault_effects_once`
 * keyed by the job id (`on conflict do nothing`), the idempotent form, which must hold exactly one
 * row per job. See test/helpers/fault-jobs.ts.
 */
import assert from 'node:assert/strict'
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, it, type TestContext } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { type Kysely, sql } from 'kysely'
import { createFaultTables, faultModule } from './helpers/fault-jobs.ts'
import { teeChildLogs } from './helpers/run-logs.ts'
import { skipUnlessPostgres } from './helpers/services.ts'
import { TEST_MASTER_KEY } from './helpers/test-config.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const NODE = join(ROOT, 'node_modules/.bin/node')
const WORKER = join(ROOT, 'test/helpers/job-worker.ts')

const LEASE_MS = 10_000
const MONITOR_MS = 1000
const POLL_MS = 500
/** The job types keep the default policy: first retry after 5–10 s (5 s doubled with jitter). */
const RETRY_DELAY_MAX_MS = 10_000
/** On PostgreSQL, a worker that NOTIFY keeps awake re-polls every max(poll interval, 5 s). */
const NOTIFY_BACKSTOP_MS = 5000

/** How long the recovery may go without a job completing before the test calls it stuck. */
const STALL_MS = 60_000

const JOBS = 2000
const KILLS = 50
const FLEET = 4
const CONCURRENCY = 4

/** Settings shared by the driver's client and the workers. */
const jobsEnv = {
  PLINTH_JOBS_LEASE: `${LEASE_MS}ms`,
  PLINTH_JOBS_MONITOR_INTERVAL: `${MONITOR_MS}ms`,
  PLINTH_JOBS_POLL_INTERVAL: `${POLL_MS}ms`,
  PLINTH_JOBS_CONCURRENCY: String(CONCURRENCY),
}

interface Worker {
  readonly proc: ChildProcessWithoutNullStreams
  readonly pid: number
  /** Resolves once the worker printed its ready line; rejects when it exits first. */
  readonly ready: Promise<void>
  isReady(): boolean
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  alive(): boolean
  /** Log lines at warn or above, parsed. */
  problems(): Record<string, unknown>[]
  output(): string
}

const everyWorker: Worker[] = []

function startWorker(databaseUrl: string): Worker {
  const proc = spawn(NODE, [WORKER], {
    cwd: ROOT,
    env: {
      PATH: process.env.PATH ?? '',
      PLINTH_ENV: 'test',
      PLINTH_ROLE: 'worker',
      DATABASE_URL: databaseUrl,
      PLINTH_DATA_DIR: 'memory://',
      PLINTH_MASTER_KEY: TEST_MASTER_KEY,
      PORT: '0',
      HOST: '127.0.0.1',
      PLINTH_LOG_LEVEL: 'warn',
      PLINTH_LOG_FORMAT: 'json',
      PLINTH_DB_POOL_MAX: '4',
      PLINTH_SHUTDOWN_DELAY: '0',
      // 50+ boots: reusing V8's compiled code saves a good share of each one's CPU.
      NODE_COMPILE_CACHE: join(tmpdir(), 'plinth-test-compile-cache'),
      ...jobsEnv,
    },
  })
  let out = ''
  let err = ''
  let ready = false
  proc.stdout.on('data', (d) => (out += d))
  proc.stderr.on('data', (d) => (err += d))
  teeChildLogs(proc)
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    proc.on('exit', (code, signal) => resolve({ code, signal })),
  )
  const readyPromise = new Promise<void>((resolve, reject) => {
    const onData = () => {
      if (!out.includes('"ready":true')) return
      ready = true
      proc.stdout.off('data', onData)
      resolve()
    }
    proc.stdout.on('data', onData)
    void exited.then(({ code, signal }) => {
      if (!ready) reject(new Error(`worker exited (${signal ?? code}) before it was ready:\n${out}\n${err}`))
    })
  })
  readyPromise.catch(() => {}) // a worker killed while booting is expected; awaiting it still throws
  const worker: Worker = {
    proc,
    pid: proc.pid as number,
    ready: readyPromise,
    isReady: () => ready,
    exited,
    alive: () => proc.exitCode === null && proc.signalCode === null,
    problems: () =>
      out
        .split('\n')
        .filter((l) => l.startsWith('{') && !l.includes('"ready":true'))
        .map((l) => JSON.parse(l) as Record<string, unknown>)
        .filter((l) => typeof l.level === 'number' && l.level >= 40),
    output: () => `${out}\n${err}`,
  }
  everyWorker.push(worker)
  return worker
}

/** Rejects when `promise` takes longer than `ms`. */
function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms)
  })
  return Promise.race([promise, late]).finally(() => clearTimeout(timer))
}

/** The driver: an `api`-role Plinth (enqueues, runs no job) on a fresh database, with the fault tables. */
async function startDriver(): Promise<{ plinth: TestPlinth; db: Kysely<unknown>; url: string }> {
  let db: Kysely<unknown> | undefined
  const plinth = await startTestPlinth({
    backend: 'postgres',
    env: { PLINTH_ROLE: 'api', PLINTH_MASTER_KEY: TEST_MASTER_KEY, ...jobsEnv },
    modules: [faultModule(() => db as Kysely<unknown>)],
  })
  db = plinth.db.kysely as unknown as Kysely<unknown>
  await createFaultTables(db)
  return { plinth, db, url: plinth.config.databaseUrl as string }
}

async function statesOf(db: Kysely<unknown>, name: string): Promise<Record<string, number>> {
  const { rows } = await sql<{ state: string; n: number }>`
    select state::text as state, count(*)::int as n from plinth_jobs.job where name = ${name} group by 1`.execute(
    db,
  )
  return Object.fromEntries(rows.map((r) => [r.state, r.n]))
}

const describeIf = await skipUnlessPostgres()

describe('job delivery when workers are killed', { skip: describeIf, concurrency: true }, () => {
  const drivers: TestPlinth[] = []
  after(async () => {
    for (const w of everyWorker) if (w.alive()) w.proc.kill('SIGKILL')
    await Promise.all(everyWorker.map((w) => w.exited))
    await Promise.all(drivers.map((p) => p.close()))
  })

  it(`${JOBS} jobs over ${FLEET} workers, ${KILLS}+ of them SIGKILLed at random: every job completes, none lost`, {
    timeout: 600_000,
  }, async (t: TestContext) => {
    const { plinth, db, url } = await startDriver()
    drivers.push(plinth)
    const started = performance.now()
    const fleet: Worker[] = Array.from({ length: FLEET }, () => startWorker(url))
    await within(60_000, 'the first workers starting', Promise.all(fleet.map((w) => w.ready)))
    const booted = performance.now()

    // Jobs arrive throughout the kill phase (about 40/s), so that kills land on workers in the
    // middle of jobs rather than on an idle fleet once the queue is empty.
    let enqueued = 0
    const enqueuing = (async () => {
      while (enqueued < JOBS) {
        const tick = performance.now()
        for (let i = 0; i < 4 && enqueued < JOBS; i++) {
          const { created } = await plinth.jobs.enqueue('fault.work', { n: enqueued })
          assert.equal(created, true)
          enqueued++
        }
        await sleep(Math.max(0, 100 - (performance.now() - tick)))
      }
    })()
    let enqueueDone = false
    void enqueuing.then(() => (enqueueDone = true))

    // Every 0.5–1.5 s, a random worker among those running jobs; when every worker is still booting
    // (a slow machine), a booting one: a kill in the middle of start-up must lose nothing either.
    let kills = 0
    let killedBooting = 0
    while (kills < KILLS || !enqueueDone) {
      await sleep(500 + Math.random() * 1000)
      const ready = fleet.filter((w) => w.isReady() && w.alive())
      const pool = ready.length > 0 ? ready : fleet.filter((w) => w.alive())
      const victim = pool[Math.floor(Math.random() * pool.length)]
      if (!victim) continue
      if (!victim.isReady()) killedBooting++
      victim.proc.kill('SIGKILL')
      kills++
      const { signal } = await within(60_000, 'a killed worker exiting', victim.exited)
      assert.equal(signal, 'SIGKILL')
      fleet.splice(fleet.indexOf(victim), 1, startWorker(url))
    }
    await enqueuing
    const lastKill = performance.now()

    // Jobs the killed workers held come back after their lease and a retry delay. Waited for as
    // long as jobs keep completing (a loaded machine is slow, not wrong); a stall fails the test.
    let states: Record<string, number> = {}
    let progress = { completed: -1, at: performance.now() }
    for (; ; await sleep(250)) {
      states = await statesOf(db, 'fault.work')
      if (states.completed === JOBS) break
      if ((states.completed ?? 0) > progress.completed)
        progress = { completed: states.completed ?? 0, at: performance.now() }
      else if (performance.now() - progress.at > STALL_MS)
        assert.fail(`no job completed for ${STALL_MS / 1000} s: ${JSON.stringify(states)}`)
    }
    const recovered = performance.now()

    assert.deepEqual(states, { completed: JOBS }, 'every job is completed, none failed or pending')
    assert.deepEqual(await statesOf(db, 'fault.work.dead'), {}, 'nothing was dead-lettered')
    const { rows } = await sql<{
      rows: number
      distinct: number
      n: number
      once: number
      retried: number
      duplicated: number
      maxRuns: number
      pids: number
    }>`select
        (select count(*)::int from fault_effects) as rows,
        (select count(distinct job_id)::int from fault_effects) as distinct,
        (select count(distinct n)::int from fault_effects) as n,
        (select count(*)::int from fault_effects_once) as once,
        (select count(*)::int from plinth_jobs.job where name = 'fault.work' and retry_count > 0) as retried,
        (select count(*)::int from (select job_id from fault_effects group by 1 having count(*) > 1) d) as duplicated,
        (select coalesce(max(c), 0)::int from (select count(*) as c from fault_effects group by job_id) m) as "maxRuns",
        (select count(distinct pid)::int from fault_effects) as pids`.execute(db)
    const r = rows[0]!
    const duplicates = r.rows - r.distinct
    t.diagnostic(
      `kills ${kills} (${killedBooting} of a worker still booting), workers started ${FLEET + kills}, ` +
        `worker processes that ran jobs ${r.pids}`,
    )
    t.diagnostic(
      `jobs ${JOBS}: effects ${r.rows} rows over ${r.distinct} jobs, duplicated side effects ${duplicates} ` +
        `(${r.duplicated} jobs, at most ${r.maxRuns} runs of one job); jobs retried after a kill ${r.retried}`,
    )
    t.diagnostic(
      `boot ${Math.round(booted - started)} ms, kill phase ${Math.round((lastKill - booted) / 1000)} s, ` +
        `all completed ${Math.round((recovered - lastKill) / 1000)} s after the last kill`,
    )

    assert.equal(r.distinct, JOBS, 'a job ran to its side effect for every job id: none lost')
    assert.equal(r.n, JOBS, 'every payload was seen')
    assert.equal(r.once, JOBS, 'the idempotent side effect holds exactly one row per job')
    // A duplicate is an attempt that wrote its effect but died before completing: at most the jobs
    // in flight on the killed worker, CONCURRENCY per kill.
    assert.ok(duplicates <= kills * CONCURRENCY, `${duplicates} duplicates for ${kills} kills`)
    assert.ok(r.retried <= kills * CONCURRENCY, `${r.retried} jobs retried for ${kills} kills`)
    // With a few dozen kills of running workers, some must have landed on jobs in flight; if none
    // did, the test proved nothing. (On a machine so slow that workers were mostly killed while
    // booting, there may be too few such kills to tell.)
    if (kills - killedBooting >= 20) assert.ok(r.retried > 0, 'no kill landed on a job in flight')

    const problems = fleet.flatMap((w) => w.problems())
    if (problems.length > 0)
      t.diagnostic(`warnings of the surviving workers: ${JSON.stringify(problems.slice(0, 5))}`)

    // The survivors stop gracefully (the latest replacements may still be booting).
    await within(60_000, 'the survivors starting', Promise.all(fleet.map((w) => w.ready)))
    const exits = await within(
      30_000,
      'the survivors stopping',
      Promise.all(
        fleet.map((w) => {
          w.proc.kill('SIGTERM')
          return w.exited
        }),
      ),
    )
    for (const [i, exit] of exits.entries())
      assert.deepEqual(exit, { code: 0, signal: null }, fleet[i]!.output())
  })

  it('a worker killed with kill -9 mid-job gives the job back when its lease runs out; another worker completes it', {
    timeout: 300_000,
  }, async (t: TestContext) => {
    const { plinth, db, url } = await startDriver()
    drivers.push(plinth)
    const first = startWorker(url)
    await within(60_000, 'the first worker starting', first.ready)

    const { id } = await plinth.jobs.enqueue('fault.long', { ms: 30_000 })
    const startsOf = async () =>
      (
        await sql<{ attempt: number; pid: number; at: Date }>`
          select attempt, pid, at from fault_starts where job_id = ${id} order by attempt`.execute(db)
      ).rows
    for (const until = performance.now() + 120_000; (await startsOf()).length === 0; await sleep(50))
      if (performance.now() > until) assert.fail('the long job did not start within 120 s')
    // Another worker joins while the first one is in the middle of the job (it finds nothing to do):
    // what is measured is the engine's recovery, not how long a replacement takes to boot.
    const second = startWorker(url)
    await within(60_000, 'the second worker starting', second.ready)
    assert.equal((await statesOf(db, 'fault.long')).active, 1)
    first.proc.kill('SIGKILL')
    const killedAt = Date.now()
    assert.equal((await within(60_000, 'the killed worker exiting', first.exited)).signal, 'SIGKILL')

    // Polled until completed; the wait is bounded only by the test's timeout (no window of time is
    // asserted: on a loaded machine the monitor runs late, which proves nothing either way). What
    // gave the job back is read from the engine itself.
    let givenBackAt: number | undefined
    let givenBackBy: string | undefined
    let state = 'active'
    for (; state !== 'completed'; await sleep(100)) {
      const job = await plinth.jobs.get(id)
      state = job.state
      if (state !== 'active' && givenBackAt === undefined) {
        givenBackAt = Date.now()
        const { rows } = await sql<{ message: string | null }>`
          select coalesce(output->'value'->>'message', output->>'message') as message
          from plinth_jobs.job where id = ${id}`.execute(db)
        givenBackBy = rows[0]?.message ?? undefined
      }
    }
    const job = await plinth.jobs.get(id)
    const starts = await startsOf()
    assert.equal(starts.length, 2, JSON.stringify(starts))
    assert.deepEqual(
      starts.map((s) => [s.attempt, s.pid]),
      [
        [1, first.pid],
        [2, second.pid],
      ],
    )
    assert.deepEqual(job.output, { pid: second.pid }, 'the other worker completed it')
    const effects = await sql<{ pid: number }>`select pid from fault_effects where job_id = ${id}`.execute(db)
    assert.deepEqual(
      effects.rows.map((e) => e.pid),
      [second.pid],
      'the killed attempt left no side effect; the second one did',
    )

    const givenBack = (givenBackAt as number) - killedAt
    const restarted = new Date(starts[1]!.at).getTime() - killedAt
    t.diagnostic(
      `kill -9 → job given back (state retry) ${(givenBack / 1000).toFixed(1)} s; ` +
        `→ second attempt started ${(restarted / 1000).toFixed(1)} s ` +
        `(lease ${LEASE_MS / 1000} s, monitor ${MONITOR_MS / 1000} s, retry delay 5–${RETRY_DELAY_MAX_MS / 1000} s, notify backstop ${NOTIFY_BACKSTOP_MS / 1000} s)`,
    )
    // Given back by its lease: the heartbeat the killed worker stopped sending ran out (not the
    // job's own timeout, nor anything else), and not before it could have: the lease is renewed
    // every half lease, so it ends at least half a lease after the kill.
    assert.equal(givenBackBy, 'job heartbeat timeout', 'what gave the job back')
    assert.ok(
      givenBack >= LEASE_MS / 2 - 1000,
      `given back ${givenBack} ms after the kill: before its lease ran out`,
    )
    assert.ok(restarted >= givenBack - 1000, 'the second attempt started after the job was given back')

    second.proc.kill('SIGTERM')
    assert.deepEqual(await within(30_000, 'the second worker stopping', second.exited), {
      code: 0,
      signal: null,
    })
  })
})
