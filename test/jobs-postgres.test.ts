import assert from 'node:assert/strict'
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process'
import { after, before, describe, it } from 'node:test'
import { sql } from 'kysely'
import pg from 'pg'
import { runCli } from '../src/main.ts'
import { jobsKit } from './helpers/jobs-kit.ts'
import { teeChildLogs } from './helpers/run-logs.ts'
import { skipUnlessPostgres } from './helpers/services.ts'
import { startTcpProxy } from './helpers/tcp-proxy.ts'
import { TEST_MASTER_KEY } from './helpers/test-config.ts'
import { createTestDatabase, type TestDatabase } from './helpers/test-database.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'
import { holdsFor, waitFor } from './helpers/wait-for.ts'

const skip = await skipUnlessPostgres()
// Processes that share a database share its master key (the data keys are wrapped under it).
const FAST = {
  PLINTH_JOBS_POLL_INTERVAL: '500ms',
  PLINTH_JOBS_MONITOR_INTERVAL: '1s',
  PLINTH_MASTER_KEY: TEST_MASTER_KEY,
}

/**
 * Waits until the engine's cron made `passes` more passes (in any process): each claims the pass by
 * stamping `plinth_jobs.version.cron_on`, so a later stamp means the pass before it finished its
 * sends. For "nothing more is sent" claims, in place of sleeping for a few passes.
 */
async function cronPasses(readCronOn: () => Promise<Date | null>, passes: number): Promise<void> {
  let last = await readCronOn()
  for (let i = 0; i < passes; i++) {
    const before = last
    last = await waitFor(
      `cron pass ${i + 1} of ${passes}`,
      async () => {
        const now = await readCronOn()
        return now !== null && (before === null || now > before) ? now : undefined
      },
      { timeoutMs: 30_000, intervalMs: 100 },
    )
  }
}

describe('jobs on PostgreSQL', { skip }, () => {
  let db: TestDatabase
  let worker: TestPlinth
  const kit = jobsKit()

  before(async () => {
    db = await createTestDatabase()
    worker = await startTestPlinth({ env: { DATABASE_URL: db.url, ...FAST }, modules: [kit.module] })
  })
  after(async () => {
    await worker?.close()
    await db?.drop()
  })

  const client = (env: Record<string, string> = {}) =>
    startTestPlinth({
      env: { DATABASE_URL: db.url, PLINTH_ROLE: 'api', ...FAST, ...env },
      modules: [kit.module],
    })

  it('enqueues inside a transaction: nothing on rollback, a job on commit', async () => {
    await assert.rejects(
      worker.db.kysely.transaction().execute(async (trx) => {
        const { id } = await worker.jobs.enqueue('kit.record', { tag: 'rolled-back' }, { db: trx })
        assert.ok(id)
        throw new Error('roll back')
      }),
      /roll back/,
    )
    assert.equal(kit.attempts.filter((a) => (a.payload as { tag?: string }).tag === 'rolled-back').length, 0)
    assert.equal((await worker.jobs.list({ name: 'kit.record' })).items.length, 0)
    const id = await worker.db.kysely.transaction().execute(async (trx) => {
      const r = await worker.jobs.enqueue(
        'kit.record',
        { tag: 'committed' },
        { db: trx, idempotencyKey: 'tx-1' },
      )
      return r.id
    })
    await waitFor('the committed job', async () => kit.of(id).length === 1)
  })

  it('runs jobs only where workers run: an api process enqueues, a worker process runs', async () => {
    const api = await client()
    try {
      assert.equal(api.jobs.mode, 'client')
      const { id } = await api.jobs.enqueue('kit.record', { tag: 'from-api' }, { requestId: 'req-api' })
      const run = await waitFor('the worker to run it', async () => kit.of(id)[0])
      assert.equal(run.requestId, 'req-api')
      // the api process has no workers: with the worker gone, jobs wait
      assert.equal(api.jobs.boss.getWipData().length, 0)
    } finally {
      await api.close()
    }
  })

  it('drains on shutdown: a running job finishes; one that outlasts the timeout is given back and aborted', async () => {
    const alone = await startTestPlinth({
      backend: 'postgres',
      env: { ...FAST, PLINTH_SHUTDOWN_TIMEOUT: '1500ms' },
      modules: [kit.module],
    })
    let closed = false
    try {
      const quick = await alone.jobs.enqueue('kit.sleepy', { ms: 700 })
      const long = await alone.jobs.enqueue('kit.sleepy', { ms: 20_000 })
      await waitFor(
        'both jobs to start',
        async () => kit.of(quick.id).length > 0 && kit.of(long.id).length > 0,
      )
      const started = performance.now()
      const stopping = alone.shutdown()
      await stopping
      closed = true
      const elapsed = performance.now() - started
      assert.ok(
        elapsed >= 1000 && elapsed < 6000,
        `shutdown took ${Math.round(elapsed)} ms for a 1.5 s timeout`,
      )
      assert.ok(kit.finished.includes(quick.id), 'the quick job finished during the drain')
      const [attempt] = kit.of(long.id)
      assert.ok(attempt?.aborted, "the long job's signal aborted at the shutdown timeout")
      // read the jobs table directly: the instance is shut down
      const pool = new pg.Pool({ connectionString: alone.config.databaseUrl, max: 1 })
      try {
        const { rows } = await pool.query<{ id: string; state: string }>(
          'select id, state::text as state from plinth_jobs.job where id = any($1::uuid[])',
          [[quick.id, long.id]],
        )
        const state = Object.fromEntries(rows.map((r) => [r.id, r.state]))
        assert.equal(state[quick.id], 'completed')
        assert.equal(state[long.id], 'retry', 'the unfinished job is given back to be retried, not lost')
      } finally {
        await pool.end()
      }
    } finally {
      if (!closed) await alone.shutdown().catch(() => {})
      await alone.close()
    }
  })

  it('keeps working through a database outage and resumes by itself', async () => {
    const url = new URL(db.url)
    const proxy = await startTcpProxy({ host: url.hostname, port: Number(url.port || 5432) })
    const viaProxy = await startTestPlinth({
      env: { DATABASE_URL: proxy.through(db.url), ...FAST, PLINTH_DB_CONNECT_TIMEOUT: '1s' },
      modules: [],
    })
    try {
      // the proxied instance has no kit job types; use its engine for the heartbeat job
      const before = await viaProxy.jobs.enqueue('plinth.heartbeat', {})
      await waitFor(
        'a heartbeat before the outage',
        async () => (await worker.jobs.get(before.id)).state === 'completed',
      )
      proxy.cut()
      await assert.rejects(viaProxy.jobs.enqueue('plinth.heartbeat', {}), (err: { code?: string }) => {
        assert.equal(err.code, 'PLINTH_JOBS_UNAVAILABLE')
        return true
      })
      // the outage lasts a while (workers and the client see failed polls), and enqueue keeps refusing
      await holdsFor(
        'enqueue refuses during the outage',
        async () =>
          viaProxy.jobs.enqueue('plinth.heartbeat', {}).then(
            () => false,
            (err: { code?: string }) => err.code === 'PLINTH_JOBS_UNAVAILABLE',
          ),
        { forMs: 2500, intervalMs: 250 },
      )
      proxy.restore()
      const afterOutage = await waitFor(
        'enqueue to work again',
        async () => viaProxy.jobs.enqueue('plinth.heartbeat', {}).catch(() => undefined),
        { timeoutMs: 20_000, intervalMs: 500 },
      )
      await waitFor(
        'the job after the outage',
        async () => (await worker.jobs.get(afterOutage.id)).state === 'completed',
        {
          timeoutMs: 20_000,
        },
      )
    } finally {
      await viaProxy.close()
      await proxy.close()
    }
  })

  it('honours the missed-ticks policy: skip sends nothing for a gap, once sends one job', async () => {
    const api = await client()
    try {
      const past = new Date(Date.now() - 5 * 60_000)
      const cron = `${past.getUTCMinutes()} ${past.getUTCHours()} * * *`
      const skipped = await api.context.schedules.create({
        jobName: 'kit.record',
        cron,
        payload: { tag: 'skip' },
        missed: 'skip',
      })
      const once = await api.context.schedules.create({
        jobName: 'kit.record',
        cron,
        payload: { tag: 'once' },
        missed: 'once',
      })
      // Pretend every worker was down for ten minutes: the last cron pass and the schedules are older
      // than the occurrence five minutes ago, which is outside the 60-second due window.
      await sql`update plinth_jobs.schedule set created_on = now() - interval '10 minutes'
        where key in (${skipped.id}, ${once.id})`.execute(api.db.kysely)
      await sql`update plinth_jobs.version set cron_on = now() - interval '10 minutes'`.execute(api.db.kysely)
      const byTag = (tag: string) => kit.attempts.filter((a) => (a.payload as { tag?: string }).tag === tag)
      await waitFor('the catch-up job', async () => byTag('once').length > 0, { timeoutMs: 20_000 })
      await cronPasses(async () => {
        const { rows } = await sql<{ cron_on: Date | null }>`select cron_on from plinth_jobs.version`.execute(
          api.db.kysely,
        )
        return rows[0]?.cron_on ?? null
      }, 2)
      const sent = (await api.jobs.list({ name: 'kit.record', limit: 200 })).items.map(
        (j) => (j.payload as { tag?: string }).tag,
      )
      assert.equal(sent.filter((t) => t === 'once').length, 1, 'one job sent for the missed ticks')
      assert.equal(sent.filter((t) => t === 'skip').length, 0, 'nothing sent for a skipped gap')
      assert.equal(byTag('once').length, 1, 'one job for the missed ticks')
      assert.equal(byTag('skip').length, 0, 'nothing for a skipped gap')
    } finally {
      await api.close()
    }
  })

  it('manages jobs and schedules from the CLI', async () => {
    // in-process, as `plinth` runs it, with the environment a deployment would give it
    const env: Record<string, string> = {
      PLINTH_ENV: 'test',
      DATABASE_URL: db.url,
      PLINTH_LOG_LEVEL: 'silent',
      PLINTH_MASTER_KEY: TEST_MASTER_KEY,
    }
    const saved = Object.fromEntries(Object.keys(env).map((k) => [k, process.env[k]]))
    Object.assign(process.env, env)
    after(() => {
      for (const [k, v] of Object.entries(saved))
        if (v === undefined) delete process.env[k]
        else process.env[k] = v
    })
    const cli = async (...args: string[]) => {
      let out = ''
      let err = ''
      const code = await runCli(args, { out: (t) => (out += `${t}\n`), err: (t) => (err += `${t}\n`) })
      return { code, out, err }
    }
    const enq = await cli(
      'jobs',
      'enqueue',
      'plinth.heartbeat',
      '--payload',
      '{}',
      '--delay',
      '600000',
      '--json',
    )
    assert.equal(enq.code, 0, enq.err)
    const { id } = JSON.parse(enq.out)
    const shown = await cli('jobs', 'show', id)
    assert.equal(shown.code, 0, shown.err)
    assert.match(shown.out, /state: +created/)
    const cancelled = await cli('jobs', 'cancel', id)
    assert.equal(cancelled.code, 0, cancelled.err)
    assert.match(cancelled.out, /cancelled/)
    const again = await cli('jobs', 'cancel', id)
    assert.equal(again.code, 1)
    assert.match(again.err, /PLINTH_JOB_STATE_CONFLICT/)
    // usage mistakes are refused before connecting
    assert.equal((await cli('jobs', 'list', '--state', 'asleep')).code, 2)
    assert.equal((await cli('jobs', 'enqueue', 'plinth.heartbeat', '--payload', '{oops')).code, 2)
    assert.equal((await cli('schedules', 'create', '--job', 'plinth.heartbeat')).code, 2)

    const created = await cli(
      'schedules',
      'create',
      '--job',
      'plinth.heartbeat',
      '--cron',
      '0 4 * * *',
      '--tz',
      'Asia/Tokyo',
      '--json',
    )
    assert.equal(created.code, 0, created.err)
    const schedule = JSON.parse(created.out)
    assert.equal(schedule.timezone, 'Asia/Tokyo')
    assert.match((await cli('schedules', 'pause', schedule.id)).out, /paused/)
    assert.equal((await cli('schedules', 'delete', schedule.id)).code, 0)
    assert.equal(
      (await worker.context.schedules.list()).some((x) => x.id === schedule.id),
      false,
    )
    const listed = await worker.jobs.list({ name: 'plinth.heartbeat', state: 'cancelled' })
    assert.ok(listed.items.some((j) => j.id === id))
  })
})

describe('schedules across three worker processes', { skip }, () => {
  let db: TestDatabase
  const procs: ChildProcessWithoutNullStreams[] = []
  after(async () => {
    for (const p of procs) p.kill('SIGKILL')
    await db?.drop()
  })

  it('fires each tick exactly once', async () => {
    db = await createTestDatabase()
    // migrate and create the schedule from this process (api role: it fires nothing itself)
    const api = await startTestPlinth({
      env: { DATABASE_URL: db.url, PLINTH_ROLE: 'api', PLINTH_MASTER_KEY: TEST_MASTER_KEY },
    })
    const env = {
      PATH: process.env.PATH ?? '',
      PLINTH_ENV: 'test',
      DATABASE_URL: db.url,
      PORT: '0',
      HOST: '127.0.0.1',
      PLINTH_LOG_LEVEL: 'info',
      PLINTH_LOG_FORMAT: 'json',
      PLINTH_JOBS_MONITOR_INTERVAL: '1s',
      PLINTH_JOBS_POLL_INTERVAL: '500ms',
      PLINTH_MASTER_KEY: TEST_MASTER_KEY,
    }
    const ready: Promise<void>[] = []
    for (let i = 0; i < 3; i++) {
      const proc = spawn(process.execPath, ['src/main.ts', 'start', '--role', 'worker'], { env })
      procs.push(proc)
      teeChildLogs(proc, env)
      let out = ''
      ready.push(
        new Promise((resolve, reject) => {
          proc.stdout.on('data', (d) => {
            out += d
            if (out.includes('"plinth listening"')) resolve()
          })
          proc.on('exit', (code) => reject(new Error(`worker exited ${code}: ${out}`)))
          proc.stderr.on('data', (d) => (out += d))
        }),
      )
    }
    await Promise.all(ready)
    try {
      // 20 schedules due now; three processes race their cron passes every second
      const ids: string[] = []
      for (let i = 0; i < 20; i++)
        ids.push((await api.context.schedules.create({ jobName: 'plinth.heartbeat', cron: '* * * * *' })).id)
      const pool = new pg.Pool({ connectionString: db.url, max: 1 })
      try {
        const count = async () =>
          (
            await pool.query<{ schedule: string; ticks: number; jobs: number }>(
              // ticks: the distinct minute slots the engine filed for the schedule; jobs: what ran
              `select s.id as schedule,
                      (select count(distinct t.data->>'slot')::int from plinth_jobs.job t
                        where t.data->>'key' = s.id and t.data ? 'slot') as ticks,
                      (select count(*)::int from plinth_jobs.job j
                        where j.name = 'plinth.heartbeat' and j.data->'meta'->>'scheduleId' = s.id) as jobs
                 from unnest($1::text[]) as s(id)`,
              [ids],
            )
          ).rows
        await waitFor('every schedule to fire', async () => (await count()).every((r) => r.jobs > 0), {
          timeoutMs: 30_000,
        })
        // several more passes, by whichever processes win them
        await cronPasses(
          async () =>
            (await pool.query<{ cron_on: Date | null }>('select cron_on from plinth_jobs.version')).rows[0]
              ?.cron_on ?? null,
          5,
        )
        // A tick becomes its job at the send-it queue's next fetch (a poll later), so a minute
        // boundary during those passes leaves the newest ticks briefly without theirs: every tick
        // gets its job in the end, and none ever gets two.
        await waitFor(
          'every tick forwarded to its job',
          async () => {
            const rows = await count()
            for (const row of rows)
              assert.ok(
                row.jobs <= row.ticks,
                `schedule ${row.schedule}: ${row.jobs} jobs for ${row.ticks} ticks`,
              )
            return rows.every((row) => row.jobs === row.ticks)
          },
          { timeoutMs: 30_000, intervalMs: 250 },
        )
      } finally {
        await pool.end()
      }
    } finally {
      await api.close()
    }
  })
})
