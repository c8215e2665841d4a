/**
 * Jobs benchmark: Plinth's job layer beside raw pg-boss with the same settings, on the PostgreSQL
 * server (BENCH_DATABASE_URL, default the local test server), each run on a fresh database in its
 * own child process (bench/jobs/side.ts). Per run: jobs/s draining a pre-filled queue of no-op jobs,
 * then enqueue→start latency under a paced enqueue. Rounds alternate the sides (plinth, pg-boss,
 * pg-boss batch, plinth …); the table shows the median of the rounds. Exits 0 whether or not the
 * target is met; 1 when a run fails; 2 on bad arguments; 130 when interrupted.
 *
 * Usage: node bench/jobs/run.ts [--jobs <n>] [--duration <s>] [--rounds <n>]
 */
import { fork } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { cpus, loadavg } from 'node:os'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import pg from 'pg'
import { isInterrupted, runBenchmark, track } from '../lib/children.ts'
import { median, round } from '../lib/load.ts'
import { boundedInt, type Range } from '../lib/options.ts'
import { num } from '../lib/table.ts'
import { type LatencyFigures, type Settings, SIDES, type SideName, type SideResult } from './sides.ts'

const SIDE_FILE = fileURLToPath(new URL('./side.ts', import.meta.url))
const SERVER_URL = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres'
const ORDER: readonly SideName[] = ['plinth', 'pg-boss', 'pg-boss-batch']
/** The side the target ratio is taken against. */
const BASELINE: SideName = 'pg-boss'
const TARGET_RATIO = 0.9
const RUN_TIMEOUT_MS = 240_000

const JOBS: Range = { default: 5000, min: 100, max: 100_000 }
const LATENCY_SECONDS: Range = { default: 5, min: 1, max: 60 }
const ROUNDS: Range = { default: 2, min: 1, max: 9 }
const CONCURRENCY = 4
const RATE = 200
const BATCH_SIZE = 4
const POLL_SECONDS = 1
const MONITOR_SECONDS = 10

const USAGE = `Usage: node bench/jobs/run.ts [--jobs <n>] [--duration <seconds>] [--rounds <n>]

  --jobs      jobs pre-filled for the throughput phase, ${JOBS.min}-${JOBS.max} (default ${JOBS.default})
  --duration  seconds of paced enqueue (${RATE} jobs/s) in the latency phase, ${LATENCY_SECONDS.min}-${LATENCY_SECONDS.max} (default ${LATENCY_SECONDS.default}; BENCH_DURATION sets it too)
  --rounds    runs per side, alternating ${ORDER.join(', ')}, ${ROUNDS.min}-${ROUNDS.max} (default ${ROUNDS.default})

  BENCH_DATABASE_URL  a PostgreSQL server the benchmark may create and drop databases on
                      (default postgres://postgres@127.0.0.1:5432/postgres)`

function options(argv: readonly string[]) {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      jobs: { type: 'string' },
      duration: { type: 'string' },
      rounds: { type: 'string' },
      help: { type: 'boolean' },
    },
  })
  if (values.help) {
    console.log(USAGE)
    process.exit(0)
  }
  return {
    jobs: boundedInt('--jobs', values.jobs, JOBS),
    seconds: boundedInt('--duration', values.duration ?? process.env.BENCH_DURATION, LATENCY_SECONDS),
    rounds: boundedInt('--rounds', values.rounds, ROUNDS),
  }
}

async function admin<T>(fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: SERVER_URL, connectionTimeoutMillis: 5000 })
  await client.connect()
  try {
    return await fn(client)
  } finally {
    await client.end()
  }
}

/** One run of one side on a fresh database, dropped afterwards. */
async function runSide(side: SideName, settings: Omit<Settings, 'databaseUrl'>): Promise<SideResult> {
  const name = `plinth_bench_jobs_${randomBytes(4).toString('hex')}`
  await admin((c) => c.query(`create database ${name}`))
  const url = new URL(SERVER_URL)
  url.pathname = `/${name}`
  try {
    const child = fork(SIDE_FILE, [side, JSON.stringify({ ...settings, databaseUrl: url.toString() })], {
      execPath: process.execPath,
      execArgv: [],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    })
    const handle = track(child)
    try {
      return await new Promise<SideResult>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`${side} did not finish within ${RUN_TIMEOUT_MS / 1000} s`)),
          RUN_TIMEOUT_MS,
        )
        child.once(
          'message',
          (m: { type: 'result'; result: SideResult } | { type: 'failed'; message: string }) => {
            clearTimeout(timer)
            if (m.type === 'result') resolve(m.result)
            else reject(new Error(`${side} failed:\n${m.message}`))
          },
        )
        child.once('exit', (code, signal) => {
          clearTimeout(timer)
          reject(new Error(`${side} exited (${signal ?? code}) before it reported`))
        })
      })
    } finally {
      await handle.stop()
    }
  } finally {
    await admin((c) => c.query(`drop database if exists ${name} with (force)`))
  }
}

interface Row {
  readonly jobsPerSecond: number
  readonly p50Ms: number
  readonly p99Ms: number
  readonly maxMs: number
}

function aggregate(results: readonly SideResult[]): Row {
  const m = (pick: (r: SideResult) => number, digits: number) => round(median(results.map(pick)), digits)
  return {
    jobsPerSecond: m((r) => r.throughput.jobsPerSecond, 0),
    p50Ms: m((r) => r.latency.p50Ms, 2),
    p99Ms: m((r) => r.latency.p99Ms, 2),
    maxMs: m((r) => r.latency.maxMs, 2),
  }
}

const line = (cells: readonly (string | number)[]) =>
  cells.map((c, i) => (i === 0 ? String(c).padEnd(14) : String(c).padStart(10))).join('  ')

function roundLine(r: number, rounds: number, result: SideResult): string {
  const l: LatencyFigures & { achievedRate: number } = result.latency
  return (
    `round ${r}/${rounds} ${SIDES[result.side].label.padEnd(13)}  ${num(Math.round(result.throughput.jobsPerSecond))} jobs/s ` +
    `(${result.throughput.jobs} in ${num(round(result.throughput.seconds, 2))} s)  ` +
    `latency p50 ${num(round(l.p50Ms, 2))} ms  p99 ${num(round(l.p99Ms, 2))} ms  max ${num(round(l.maxMs, 2))} ms ` +
    `(${l.jobs} jobs at ${num(Math.round(l.achievedRate))}/s)  setup ${num(round(result.setupSeconds, 1))} s`
  )
}

async function main(): Promise<number> {
  const { jobs, seconds, rounds } = options(process.argv.slice(2))
  const settings = {
    jobs,
    concurrency: CONCURRENCY,
    pollSeconds: POLL_SECONDS,
    monitorSeconds: MONITOR_SECONDS,
    rate: RATE,
    seconds,
    batchSize: BATCH_SIZE,
  }
  const cpuList = cpus()
  console.log(
    `bench/jobs: no-op jobs on PostgreSQL, concurrency ${CONCURRENCY} per process, poll ${POLL_SECONDS} s, ` +
      `${rounds} round(s) alternating ${ORDER.map((s) => SIDES[s].label).join(', ')}, each on a fresh database`,
  )
  console.log(
    `throughput: ${num(jobs)} jobs pre-filled, then the workers start; latency: ${RATE} jobs/s enqueued for ` +
      `${seconds} s into idle workers, enqueue→start from the job table`,
  )
  const loadBefore = round(loadavg()[0]!, 2)
  const server = await admin(
    async (c) => (await c.query<{ v: string }>("select current_setting('server_version') as v")).rows[0]!.v,
  )
  console.log(
    `PostgreSQL ${server} at ${new URL(SERVER_URL).host}; node ${process.version}, ${cpuList.length} CPU(s) ` +
      `${cpuList[0]?.model.trim() ?? ''}, load average ${loadBefore}`,
  )
  if (loadBefore > cpuList.length / 2) {
    console.log('warning: the machine is already busy; expect noisy figures (every side shares the noise)')
  }
  console.log('')

  const results: Record<SideName, SideResult[]> = { plinth: [], 'pg-boss': [], 'pg-boss-batch': [] }
  for (let r = 1; r <= rounds; r++) {
    for (const side of ORDER) {
      const result = await runSide(side, settings)
      if (isInterrupted()) return 130
      results[side].push(result)
      console.log(roundLine(r, rounds, result))
    }
  }

  const rows = Object.fromEntries(ORDER.map((s) => [s, aggregate(results[s])])) as Record<SideName, Row>
  const figures = rounds === 1 ? 'one run each' : `median of ${rounds} runs each`
  console.log(`\n${line(['side', 'jobs/s', 'p50 ms', 'p99 ms', 'max ms'])}   (${figures})`)
  for (const side of ORDER) {
    const s = rows[side]
    console.log(line([SIDES[side].label, num(s.jobsPerSecond), num(s.p50Ms), num(s.p99Ms), num(s.maxMs)]))
  }
  const ratio = round(rows.plinth.jobsPerSecond / rows[BASELINE].jobsPerSecond, 3)
  const batchRatio = round(rows.plinth.jobsPerSecond / rows['pg-boss-batch'].jobsPerSecond, 3)
  const met = ratio >= TARGET_RATIO
  console.log(
    `\nratio plinth/${SIDES[BASELINE].label} jobs/s: ${ratio.toFixed(3)}   target >= ${TARGET_RATIO}: ${met ? 'met' : 'MISSED'}`,
  )
  console.log(
    `ratio plinth/pg-boss batch jobs/s: ${batchRatio.toFixed(3)}   (batches of ${BATCH_SIZE}; no target)`,
  )
  console.log(
    JSON.stringify({
      bench: 'jobs',
      jobs,
      concurrency: CONCURRENCY,
      pollSeconds: POLL_SECONDS,
      latency: { rate: RATE, seconds },
      batchSize: BATCH_SIZE,
      rounds,
      aggregate: 'median',
      node: process.version,
      cpus: cpuList.length,
      postgres: server,
      loadAverageBefore: loadBefore,
      ...rows,
      ratio,
      batchRatio,
      targets: { ratio: { min: TARGET_RATIO, against: BASELINE, met } },
      ok: true,
    }),
  )
  return 0
}

await runBenchmark(main, USAGE)
