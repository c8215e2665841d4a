/**
 * The 1,000-concurrent-users part of bench/http: 1,000 keep-alive connections at a fixed offered
 * load of 1,000 requests/s in total (bench/lib/constant-rate.ts: open loop, evenly spaced, latency
 * from each request's due time), on a DB-backed authenticated read (`GET /api/v1/me/sessions` by
 * bearer) and a DB-backed write (`POST /api/v1/bench/write` by bearer: a row read under lock and
 * written back, in a transaction), on the embedded database (the default) and on PostgreSQL; bare
 * Fastify's `GET /live` under the same offered load is the floor. Then the capacity: the highest
 * offered load of a fixed ladder at which p99 stays under 200 ms with no error.
 */
import { randomBytes } from 'node:crypto'
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { loadavg, tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import pg from 'pg'
import { isInterrupted, processCpuMs, startServer, stopServer } from '../lib/children.ts'
import { type RateSample, rateLoad } from '../lib/constant-rate.ts'
import type { Request } from '../lib/load.ts'
import { num, row } from '../lib/table.ts'
import { QUEUE_STATS, WRITE } from './protocol.ts'

const HOST = '127.0.0.1'
export const USERS = 1000
/** The offered load in total; `BENCH_USERS_RATE` lowers it where the machine cannot carry 1,000 req/s (say so beside the figures). */
export const USERS_RATE = Number(process.env.BENCH_USERS_RATE ?? 1000)
const WARMUP_SECONDS = 2
const TARGET_P99_MS = 200
/** Plinth's p99 within this factor of the floor's, in the same run. */
const TARGET_FLOOR_FACTOR = 1.5
/** Offered loads tried for the capacity, in order, from USERS_RATE up (down when it already fails). */
const LADDER_UP = [1500, 2000, 3000, 4000, 6000] as const
const LADDER_DOWN = [750, 500, 250] as const
export const CAPACITY_SECONDS = 5
const SERVER_FILE = fileURLToPath(new URL('./server.ts', import.meta.url))
export const POSTGRES_URL = process.env.BENCH_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres'
/** `BENCH_USERS_BACKENDS=embedded` (or `postgres`) runs one backend only; default both. */
const BACKENDS = (process.env.BENCH_USERS_BACKENDS ?? 'embedded,postgres')
  .split(',')
  .map((b) => b.trim())
  .filter((b): b is Backend => b === 'embedded' || b === 'postgres')
/** `BENCH_USERS_CAPACITY=off` skips the capacity ladder (a quicker before/after comparison). */
const WITH_CAPACITY = process.env.BENCH_USERS_CAPACITY !== 'off'
/** `BENCH_USERS_RUN=write` (or `read`, `floor`, a comma list) runs only those scenarios; default all three. */
const SCENARIOS = (process.env.BENCH_USERS_RUN ?? 'floor,read,write')
  .split(',')
  .map((s) => s.trim())
  .filter((s): s is Scenario => s === 'floor' || s === 'read' || s === 'write')
/**
 * `BENCH_USERS_DATA=file` runs the embedded database on a file-backed data directory (a fresh
 * temporary one per server, removed after), as `npm start` does, instead of `memory://`.
 */
const EMBEDDED_DATA = process.env.BENCH_USERS_DATA === 'file' ? 'file' : 'memory'
/**
 * `BENCH_USERS_CPU_PROF=<dir>`: the Plinth server children run with `--cpu-prof` and write their
 * profiles (one per thread: the main thread and the embedded database's worker) to that directory.
 */
const CPU_PROF_DIR = process.env.BENCH_USERS_CPU_PROF
/** `BENCH_USERS_THREADS=on` prints the server's CPU per request by thread (`/proc/<pid>/task`). */
const BY_THREAD = process.env.BENCH_USERS_THREADS === 'on'

/** CPU ms used so far by each thread of `pid`, keyed `<comm>/<tid>` (Linux only; empty elsewhere). */
export function threadCpuMs(pid: number | undefined): Map<string, number> {
  const out = new Map<string, number>()
  if (pid === undefined) return out
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8')
      const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'))
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      out.set(`${comm}/${tid}`, ((Number(fields[11]) + Number(fields[12])) * 1000) / 100)
    }
  } catch {}
  return out
}

/** The threads that used at least 0.01 ms per request, heaviest first: `node/123 1.20, …`. */
function byThread(before: Map<string, number>, after: Map<string, number>, served: number): string {
  return [...after]
    .map(([k, v]) => [k, (v - (before.get(k) ?? 0)) / Math.max(served, 1)] as const)
    .filter(([, v]) => v >= 0.01)
    .sort((a, b) => b[1] - a[1])
    .map(([k, v]) => `${k} ${v.toFixed(2)}`)
    .join(', ')
}

type Backend = 'embedded' | 'postgres'
type Scenario = 'floor' | 'read' | 'write'

interface Ready {
  port: number
  token: string
}

function requestOf(scenario: Scenario, port: number, token: string): Request {
  const base = `http://${HOST}:${port}`
  if (scenario === 'floor') return { url: `${base}/live` }
  const authorization = `Bearer ${token}`
  if (scenario === 'read') return { url: `${base}/api/v1/me/sessions`, headers: { authorization } }
  return {
    url: `${base}/api/v1${WRITE}`,
    method: 'POST',
    headers: { authorization, 'content-type': 'application/json' },
    body: '{}',
  }
}

/** One request by fetch: must answer 200 with JSON. */
async function check(scenario: Scenario, request: Request): Promise<void> {
  const res = await fetch(request.url, {
    method: request.method ?? 'GET',
    headers: { ...request.headers, connection: 'close' },
    ...(request.body === undefined ? {} : { body: request.body }),
    signal: AbortSignal.timeout(5000),
  })
  const body = await res.text()
  if (res.status !== 200) throw new Error(`${scenario} answered ${res.status}: ${body}`)
}

/** The embedded session queue's counters from the server child (undefined on PostgreSQL or an older server). */
async function queueStats(port: number, token: string): Promise<Record<string, number> | undefined> {
  try {
    const res = await fetch(`http://${HOST}:${port}/api/v1${QUEUE_STATS}`, {
      headers: { authorization: `Bearer ${token}` },
      signal: AbortSignal.timeout(5000),
    })
    if (res.status !== 200) return undefined
    return ((await res.json()) as { stats: Record<string, number> | null }).stats ?? undefined
  } catch {
    return undefined
  }
}

/** What the session queue did per request over a run: PGlite calls, and the session's idle time inside transactions. */
function queueLine(
  before: Record<string, number>,
  after: Record<string, number>,
  served: number,
  ms: number,
): string {
  const d = (k: string) => (after[k] ?? 0) - (before[k] ?? 0)
  const n = Math.max(served, 1)
  return (
    `PGlite calls/request ${(d('calls') / n).toFixed(2)}, transactions/request ${(d('transactions') / n).toFixed(2)}; ` +
    `session idle inside a transaction ${(d('idleInTransactionMs') / n).toFixed(3)} ms/request ` +
    `(${(d('idleInTransactionMs') / Math.max(d('idleInTransactionWaits'), 1)).toFixed(3)} ms per wait, ` +
    `${Math.round((d('idleInTransactionMs') / ms) * 100)} % of the run, ` +
    `${Math.round((d('blockingMs') / ms) * 100)} % with others queued); ` +
    `session free between transactions while a BEGIN answered early waited ${(d('freeWithBegunMs') / n).toFixed(3)} ms/request`
  )
}

const passes = (s: RateSample) => s.errors + s.non2xx === 0 && s.p99Ms < TARGET_P99_MS

/** A run, with the server's CPU time per response served (all its threads; null where unreadable). */
export interface ServedSample extends RateSample {
  readonly serverCpuMsPerRequest: number | null
}

export interface UsersResult {
  readonly backend: Backend
  /** Where the embedded database kept its data (embedded only). */
  readonly data?: 'memory' | 'file'
  /** Absent only when BENCH_USERS_RUN left the scenario out. */
  readonly floor?: ServedSample
  readonly read?: ServedSample
  readonly write?: ServedSample
  readonly capacity: Record<Scenario, number>
}

const statusList = (s: RateSample) =>
  s.non2xx === 0
    ? ''
    : ` (${Object.entries(s.statuses)
        .map(([code, n]) => `${n} × ${code}`)
        .join(', ')})`

function line(name: string, s: ServedSample): string {
  const cpu = s.serverCpuMsPerRequest === null ? '-' : s.serverCpuMsPerRequest.toFixed(2)
  return `${row([name, num(s.rps), num(round2(s.p50Ms)), num(round2(s.p99Ms)), s.errors, s.non2xx])}  ${num(round2(s.maxMs)).padStart(8)}  ${s.clientCpu.toFixed(2).padStart(6)}  ${cpu.padStart(10)}  ${loadavg()[0]!.toFixed(1).padStart(5)}${statusList(s)}`
}
const round2 = (v: number) => Math.round(v * 100) / 100

const measure = (request: Request, rate: number, seconds: number) =>
  rateLoad(request, { rate, connections: USERS, seconds })

/** Highest offered load of the ladder that passes (0 when none does). */
async function capacity(scenario: Scenario, request: Request, atBase: RateSample): Promise<number> {
  if (!WITH_CAPACITY) return Number.NaN
  const ladder = passes(atBase) ? LADDER_UP : LADDER_DOWN
  let best = passes(atBase) ? USERS_RATE : 0
  for (const rate of ladder) {
    if (isInterrupted()) break
    const s = await measure(request, rate, CAPACITY_SECONDS)
    const ok = passes(s)
    console.log(
      `  capacity ${scenario.padEnd(5)} ${String(rate).padStart(5)} req/s offered: ${num(s.rps)} served, ` +
        `p99 ${num(round2(s.p99Ms))} ms, errors ${s.errors}, non-2xx ${s.non2xx}${statusList(s)}: ${ok ? 'under' : 'OVER'} ${TARGET_P99_MS} ms`,
    )
    if (ok && ladder === LADDER_UP) best = rate
    if (ok && ladder === LADDER_DOWN) return rate
    if (!ok && ladder === LADDER_UP) break
  }
  return best
}

async function onBackend(
  backend: Backend,
  duration: number,
  problems: string[],
): Promise<UsersResult | undefined> {
  // Every server start on one scratch database must present the same keys (its data keys are
  // wrapped under the master key); children inherit these through the environment.
  process.env.BENCH_HTTP_MASTER_KEY ??= randomBytes(32).toString('base64')
  process.env.BENCH_HTTP_SECRET_KEY ??= randomBytes(48).toString('base64')
  let scratch: string | undefined
  let databaseUrl: string | undefined
  if (backend === 'postgres') {
    scratch = `plinth_bench_http_${randomBytes(4).toString('hex')}`
    const admin = new pg.Client({ connectionString: POSTGRES_URL })
    await admin.connect()
    await admin.query(`create database ${scratch}`).finally(() => admin.end())
    const u = new URL(POSTGRES_URL)
    u.pathname = `/${scratch}`
    databaseUrl = u.toString()
  }
  try {
    const samples: Partial<Record<Scenario, ServedSample>> = {}
    const caps: Record<Scenario, number> = { floor: 0, read: 0, write: 0 }
    for (const scenario of SCENARIOS) {
      const plinth = scenario !== 'floor'
      const dataDir =
        plinth && backend === 'embedded' && EMBEDDED_DATA === 'file'
          ? mkdtempSync(join(tmpdir(), 'plinth-bench-data-'))
          : undefined
      if (dataDir) process.env.BENCH_HTTP_DATA_DIR = dataDir
      else delete process.env.BENCH_HTTP_DATA_DIR
      const nodeOptions = process.env.NODE_OPTIONS
      if (plinth && CPU_PROF_DIR)
        process.env.NODE_OPTIONS =
          `${nodeOptions ?? ''} --cpu-prof --cpu-prof-dir=${resolve(CPU_PROF_DIR)}`.trim()
      const server = await startServer<Ready>(
        SERVER_FILE,
        plinth ? ['plinth', ...(databaseUrl ? [databaseUrl] : [])] : ['bare'],
        plinth ? `plinth (${backend})` : 'the bare server',
      ).finally(() => {
        if (nodeOptions === undefined) delete process.env.NODE_OPTIONS
        else process.env.NODE_OPTIONS = nodeOptions
        delete process.env.BENCH_HTTP_DATA_DIR
      })
      try {
        const request = requestOf(scenario, server.ready.port, server.ready.token)
        await check(scenario, request)
        const warm = await measure(request, USERS_RATE, WARMUP_SECONDS)
        if (warm.errors + warm.non2xx > 0)
          problems.push(
            `${backend} ${scenario} warm-up: ${warm.errors} errors, ${warm.non2xx} non-2xx${statusList(warm)}`,
          )
        const cpuBefore = processCpuMs(server.pid)
        const threadsBefore = BY_THREAD ? threadCpuMs(server.pid) : undefined
        const queueBefore =
          plinth && backend === 'embedded'
            ? await queueStats(server.ready.port, server.ready.token)
            : undefined
        const measured = await measure(request, USERS_RATE, duration)
        if (isInterrupted()) return undefined
        const cpuAfter = processCpuMs(server.pid)
        const queueAfter = queueBefore ? await queueStats(server.ready.port, server.ready.token) : undefined
        if (queueBefore && queueAfter)
          console.log(
            // count: responses recorded; count / rps: the run's length including the wait for late answers.
            `  ${scenario} ${queueLine(queueBefore, queueAfter, measured.count, (measured.count / Math.max(measured.rps, 1)) * 1000)}`,
          )
        if (threadsBefore)
          console.log(
            `  ${scenario} server CPU ms/request by thread: ${byThread(threadsBefore, threadCpuMs(server.pid), measured.rps * duration)}`,
          )
        const s: ServedSample = {
          ...measured,
          serverCpuMsPerRequest:
            cpuBefore === undefined || cpuAfter === undefined || measured.count === 0
              ? null
              : round2((cpuAfter - cpuBefore) / (measured.rps * duration)),
        }
        samples[scenario] = s
        console.log(line(scenario, s))
        caps[scenario] = await capacity(scenario, request, s)
      } finally {
        await stopServer(server, scenario, problems)
        if (dataDir) rmSync(dataDir, { recursive: true, force: true })
      }
    }
    return {
      backend,
      ...(backend === 'embedded' ? { data: EMBEDDED_DATA } : {}),
      ...samples,
      capacity: caps,
    }
  } finally {
    if (scratch) {
      const admin = new pg.Client({ connectionString: POSTGRES_URL })
      await admin.connect()
      await admin.query(`drop database if exists ${scratch} with (force)`).finally(() => admin.end())
    }
  }
}

export interface UsersSummary {
  readonly results: UsersResult[]
  readonly met: boolean
}

/** Runs both backends; prints the tables and the verdicts; problems (errors) go to `problems`. */
export async function runUsers(duration: number, problems: string[]): Promise<UsersSummary> {
  console.log(
    `\n1,000 users: ${USERS} connections, ${USERS_RATE} req/s offered in total (open loop, evenly spaced; ` +
      `latency from each request's due time), ${duration} s after a ${WARMUP_SECONDS} s warm-up, then a capacity ` +
      `ladder of ${CAPACITY_SECONDS} s steps; floor = bare Fastify GET /live under the same load`,
  )
  const results: UsersResult[] = []
  let met = true
  for (const backend of BACKENDS) {
    console.log(
      `\n${backend}${backend === 'postgres' ? ` (${new URL(POSTGRES_URL).host})` : EMBEDDED_DATA === 'file' ? ' (file-backed data directory, as npm start)' : ' (in memory, the default)'}`,
    )
    console.log(
      `${row(['run', 'requests/s', 'p50 ms', 'p99 ms', 'errors', 'non-2xx'])}    max ms  client  srv ms/req   load`,
    )
    const r = await onBackend(backend, duration, problems)
    if (!r) return { results, met: false }
    results.push(r)
    for (const scenario of ['read', 'write'] as const) {
      const s = r[scenario]
      if (!s) continue
      const ok = s.errors + s.non2xx === 0 && s.p99Ms < TARGET_P99_MS
      met &&= ok
      // Without the floor scenario (BENCH_USERS_RUN) there is nothing to compare with.
      const factor = r.floor ? s.p99Ms / Math.max(r.floor.p99Ms, 0.001) : undefined
      const vsFloor =
        factor === undefined
          ? 'floor not run'
          : `${factor.toFixed(2)}x the floor's p99 (goal <= ${TARGET_FLOOR_FACTOR}x: ${factor <= TARGET_FLOOR_FACTOR ? 'met' : 'MISSED'})`
      const floorCapacity = r.floor ? ` (floor ${num(r.capacity.floor)})` : ''
      console.log(
        `${backend} ${scenario}: p99 ${num(round2(s.p99Ms))} ms (target < ${TARGET_P99_MS}, 0 errors: ${ok ? 'met' : 'MISSED'}); ` +
          `${vsFloor}; capacity ${num(r.capacity[scenario])} req/s${floorCapacity}`,
      )
    }
  }
  return { results, met }
}
