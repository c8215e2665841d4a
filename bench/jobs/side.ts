/**
 * One side of the jobs benchmark, run as a child of `bench/jobs/run.ts` (never on its own):
 * `node bench/jobs/side.ts <side> <settings JSON>` on a fresh, empty database the parent created
 * (`settings.databaseUrl`). It measures, on that database:
 *
 * 1. throughput: `settings.jobs` no-op jobs inserted up front, then the workers start; jobs/s is
 *    the count over the span from the first job's start to the last job's completion, both read
 *    from the job table (the database's clock, the same for every side);
 * 2. latency: with the workers idle, jobs enqueued one at a time at `settings.rate` per second for
 *    `settings.seconds`; each job's enqueue→start latency is its `started_on - created_on`.
 *
 * It sends `{ type: 'result', … }` (or `{ type: 'failed', message }`) over IPC, then waits for
 * `'stop'` to shut down; a lost channel or a signal ends it too.
 */

import pg from 'pg'
import { PgBoss } from 'pg-boss'
import { createPlinth, type Plinth } from '../../src/app/create-plinth.ts'
import { builtinModules } from '../../src/app/modules.ts'
import { loadConfig } from '../../src/config/load-config.ts'
import type { PgBossJobEngine } from '../../src/modules/jobs/job-engine.ts'
import { createLogger, logDestination } from '../../src/observability/logger.ts'
import { productionEnv, requireParent } from '../lib/server-child.ts'
import {
  bossConstructorOptions,
  bossQueueOptions,
  JOB,
  type LatencyFigures,
  noopModule,
  type Settings,
  SIDES,
  type SideName,
  type SideResult,
} from './sides.ts'

const BOSS_SCHEMA = 'bench_boss'
const PLINTH_SCHEMA = 'plinth_jobs'

interface Running {
  /** Enqueues one job the way this side's application would. */
  enqueue(): Promise<void>
  close(): Promise<void>
}

/** Waits until `total` jobs of the queue are completed; fails on a failed job or after `ms`. */
async function drained(client: pg.Client, schema: string, total: number, ms: number): Promise<void> {
  const until = performance.now() + ms
  for (;;) {
    const { rows } = await client.query<{ completed: number; failed: number }>(
      `select count(*) filter (where state = 'completed')::int as completed,
              count(*) filter (where state = 'failed')::int as failed
         from ${schema}.job where name = $1`,
      [JOB],
    )
    const { completed, failed } = rows[0]!
    if (failed > 0) throw new Error(`${failed} jobs failed`)
    if (completed >= total) return
    if (performance.now() > until)
      throw new Error(`only ${completed} of ${total} jobs completed within ${ms} ms`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

/** Plinth as production runs it: the whole stack, JSON logs at `info` to a discarded file. */
async function plinthSide(settings: Settings, fill: number): Promise<Running> {
  const env = {
    ...productionEnv('127.0.0.1'),
    DATABASE_URL: settings.databaseUrl,
    PLINTH_JOBS_CONCURRENCY: String(settings.concurrency),
    PLINTH_JOBS_POLL_INTERVAL: `${settings.pollSeconds}s`,
    PLINTH_JOBS_MONITOR_INTERVAL: `${settings.monitorSeconds}s`,
  }
  const make = (role: 'api' | 'worker'): Promise<Plinth> => {
    const config = loadConfig({ env: { ...env, PLINTH_ROLE: role }, envFile: false })
    return createPlinth({
      config,
      logger: createLogger(config, logDestination('/dev/null')),
      modules: [...builtinModules, noopModule],
    })
  }
  // A client first: it migrates, creates the queues and fills one, with no worker running yet.
  const client = await make('api')
  await client.prepare()
  // the built-in jobs module's engine: pg-boss itself fills the queue
  await (client.jobs as PgBossJobEngine).boss.insert(
    JOB,
    Array.from({ length: fill }, () => ({ data: { payload: {}, meta: {} } })),
  )
  await client.shutdown()
  const worker = await make('worker')
  await worker.prepare()
  return {
    enqueue: async () => {
      await worker.jobs.enqueue(JOB, {})
    },
    close: () => worker.shutdown(),
  }
}

/** Raw pg-boss with the options Plinth gives it, and the worker options of the side. */
async function bossSide(settings: Settings, fill: number, side: SideName): Promise<Running> {
  const boss = new PgBoss({
    ...bossConstructorOptions(settings),
    schema: BOSS_SCHEMA,
    connectionString: settings.databaseUrl,
  })
  boss.on('error', (err) => console.error(`pg-boss error: ${err.message}`))
  await boss.start()
  await boss.createQueue(`${JOB}.dead`, { retentionSeconds: 365 * 86_400 })
  await boss.createQueue(JOB, { ...bossQueueOptions(), notify: true })
  await boss.insert(
    JOB,
    Array.from({ length: fill }, () => ({ data: { payload: {}, meta: {} } })),
  )
  await SIDES[side].start?.(boss, settings)
  return {
    enqueue: async () => {
      await boss.send(JOB, { payload: {}, meta: {} })
    },
    close: () => boss.stop({ graceful: true, timeout: 5000, close: true }),
  }
}

async function measure(side: SideName, settings: Settings): Promise<SideResult> {
  const client = new pg.Client({ connectionString: settings.databaseUrl })
  await client.connect()
  const schema = side === 'plinth' ? PLINTH_SCHEMA : BOSS_SCHEMA
  const setupStarted = performance.now()
  const running =
    side === 'plinth'
      ? await plinthSide(settings, settings.jobs)
      : await bossSide(settings, settings.jobs, side)
  const setupSeconds = (performance.now() - setupStarted) / 1000
  try {
    await drained(client, schema, settings.jobs, 120_000)
    const span = await client.query<{ seconds: number }>(
      `select extract(epoch from max(completed_on) - min(started_on))::float8 as seconds
         from ${schema}.job where name = $1`,
      [JOB],
    )
    const seconds = span.rows[0]!.seconds
    const marker = await client.query<{ at: Date }>('select clock_timestamp() as at')

    // Paced, open-loop enqueue: the i-th job is sent at start + i / rate whether or not the earlier
    // ones returned (a late one is sent at once), so a slow enqueue does not lower the rate.
    const total = Math.round(settings.rate * settings.seconds)
    const started = performance.now()
    const sent: Promise<void>[] = []
    for (let i = 0; i < total; i++) {
      const due = started + (i * 1000) / settings.rate
      const wait = due - performance.now()
      if (wait > 1) await new Promise((r) => setTimeout(r, wait))
      sent.push(running.enqueue())
    }
    const enqueueSeconds = (performance.now() - started) / 1000
    await Promise.all(sent)
    await drained(client, schema, settings.jobs + total, 60_000)
    const lat = await client.query<LatencyFigures>(
      `select count(*)::int as jobs,
              (percentile_cont(0.5) within group (order by ms))::float8 as "p50Ms",
              (percentile_cont(0.99) within group (order by ms))::float8 as "p99Ms",
              max(ms)::float8 as "maxMs"
         from (select extract(epoch from started_on - created_on) * 1000 as ms
                 from ${schema}.job where name = $1 and created_on >= $2) l`,
      [JOB, marker.rows[0]!.at],
    )
    const latency = lat.rows[0]!
    if (latency.jobs !== total) throw new Error(`latency phase: ${latency.jobs} jobs measured, ${total} sent`)
    return {
      side,
      setupSeconds,
      throughput: { jobs: settings.jobs, seconds, jobsPerSecond: settings.jobs / seconds },
      latency: { ...latency, achievedRate: total / enqueueSeconds },
    }
  } finally {
    await running.close()
    await client.end()
  }
}

requireParent('bench/jobs/side.ts runs as a child of bench/jobs/run.ts')
const side = process.argv[2] as SideName
const settings = JSON.parse(process.argv[3] ?? '{}') as Settings
process.on('message', (m) => {
  if (m === 'stop') process.exit(0)
})
process.on('disconnect', () => process.exit(0))
process.on('SIGINT', () => process.exit(130))
process.on('SIGTERM', () => process.exit(143))
try {
  if (!(side in SIDES)) throw new Error(`unknown side "${side}"`)
  const result = await measure(side, settings)
  process.send?.({ type: 'result', result })
} catch (err) {
  process.send?.({ type: 'failed', message: err instanceof Error ? (err.stack ?? err.message) : String(err) })
}
