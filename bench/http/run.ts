/**
 * HTTP benchmark: the same trivial route (`GET /api/v1`) served by bare Fastify and by Plinth's
 * full HTTP stack, each in its own child process started one at a time, driven by autocannon on
 * loopback from this process. Rounds alternate (bare, plinth, bare, plinth …); the table shows the
 * median of the rounds. Exits 0 whether or not the targets are met; 1 when a server fails to start
 * or stop, or answers anything but 2xx; 2 on bad arguments; 130 when interrupted.
 *
 * Then (bench/http/users.ts) the 1,000-users part: 1,000 connections at a fixed 1,000 req/s on a
 * DB-backed read and write, embedded and PostgreSQL, beside bare Fastify's /live, and the capacity.
 *
 * Usage: node bench/http/run.ts [--duration <s>] [--rounds <n>] [--part hot|users|all]
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdirSync } from 'node:fs'
import { cpus, loadavg } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { isInterrupted, processCpuMs, runBenchmark, startServer, stopServer } from '../lib/children.ts'
import { aggregate, load, median, round, type Sample, warmUp } from '../lib/load.ts'
import { DURATION, parseOptions, ROUNDS, UsageError } from '../lib/options.ts'
import { header, num, roundLine, sampleRow } from '../lib/table.ts'
import { attributePerfData, attributionLines, keepPerfMap, removeV8Logs } from './perf.ts'
import type { ServerKind } from './server.ts'
import {
  CAPACITY_SECONDS,
  POSTGRES_URL,
  runUsers,
  threadCpuMs,
  USERS,
  USERS_RATE,
  type UsersSummary,
} from './users.ts'

/**
 * `BENCH_HTTP_ROUTE=/live`: the hot part measures `GET /live` instead of `GET /api/v1` (both servers
 * serve both). `/live` is an operations route: Plinth exempts it from rate limiting, so it carries
 * neither the rate limit's accounting nor its four header lines; `/api/v1` carries everything an API
 * request does, and is the default.
 */
const HOT_ROUTES = ['/api/v1', '/live'] as const
const ROUTE = process.env.BENCH_HTTP_ROUTE ?? '/api/v1'
if (!(HOT_ROUTES as readonly string[]).includes(ROUTE))
  throw new Error(`BENCH_HTTP_ROUTE must be one of ${HOT_ROUTES.join(', ')}`)
const HOST = '127.0.0.1'
const CONNECTIONS = 100
const WARMUP_SECONDS = 2
const TARGET_RATIO = 0.6
const TARGET_P99_MS = 50
const SERVER_FILE = fileURLToPath(new URL('./server.ts', import.meta.url))
/**
 * `BENCH_HTTP_BEFORE=<dir>`: another checkout of Plinth (e.g. `git worktree add /tmp/before main`)
 * whose own bench/http/server.ts serves a third server, `before`, alternating with the other two:
 * a before/after comparison of the stack in one run, beside the same bare Fastify.
 */
const BEFORE_TREE = process.env.BENCH_HTTP_BEFORE
/**
 * `BENCH_HTTP_CPU_PROF=<dir>`: the server children of the hot part run with
 * `--cpu-prof` and write their profiles to that directory; bench/http/profile.ts reads them.
 */
const CPU_PROF_DIR = process.env.BENCH_HTTP_CPU_PROF
/**
 * `BENCH_HTTP_PERF=<dir>`: each measured run of the hot part is recorded by Linux `perf` (the
 * server's main thread, kernel stacks included; the children run with `--perf-basic-prof` so that
 * JavaScript frames have names) into `<dir>/<kind>-<round>.data`, and the round prints where that
 * thread's CPU went per request (bench/http/perf.ts).
 */
const PERF_DIR = process.env.BENCH_HTTP_PERF
/** `BENCH_HTTP_THREADS=on`: each hot round also prints the server's CPU per request by thread. */
const BY_THREAD = process.env.BENCH_HTTP_THREADS === 'on'
/**
 * `BENCH_HTTP_RATE=<requests/s>`: the measured runs of the hot part offer this load in total instead
 * of as much as each server takes, so that every server's CPU per request is measured at the same
 * work rate (a server's CPU per request falls as its throughput rises: more work per wake-up). For
 * before/after comparisons on a busy machine; below every server's capacity, the throughput ratio
 * then says nothing.
 */
const FIXED_RATE = process.env.BENCH_HTTP_RATE ? Number(process.env.BENCH_HTTP_RATE) : undefined
if (FIXED_RATE !== undefined && !(Number.isInteger(FIXED_RATE) && FIXED_RATE > 0))
  throw new Error('BENCH_HTTP_RATE must be a whole number of requests per second')
type HotKind = ServerKind | 'before'
const KINDS: readonly HotKind[] = BEFORE_TREE ? ['bare', 'plinth', 'before'] : ['bare', 'plinth']

const PARTS = ['hot', 'users', 'all'] as const
type Part = (typeof PARTS)[number]

const USAGE = `Usage: node bench/http/run.ts [--duration <seconds>] [--rounds <n>] [--part hot|users|all]

  --duration  measured seconds per run, ${DURATION.min}-${DURATION.max} (default ${DURATION.default}; BENCH_DURATION sets it too)
  --rounds    runs per server in the hot part, alternating bare and plinth, ${ROUNDS.min}-${ROUNDS.max} (default ${ROUNDS.default})
  --part      hot: GET /api/v1 at ${CONNECTIONS} connections, bare vs plinth; users: ${USERS} connections at
              ${USERS_RATE} req/s on a DB read and write, embedded and PostgreSQL (BENCH_POSTGRES_URL, default
              ${POSTGRES_URL}), with capacity steps of ${CAPACITY_SECONDS} s; all: both (default)`

/** Takes `--part <p>` out of argv (the shared options parse the rest). */
function takePart(argv: string[]): { part: Part; rest: string[] } {
  const i = argv.findIndex((a) => a === '--part' || a.startsWith('--part='))
  if (i < 0) return { part: 'all', rest: argv }
  const inline = argv[i]!.includes('=')
  const value = inline ? argv[i]!.slice('--part='.length) : argv[i + 1]
  if (!PARTS.includes(value as Part))
    throw new UsageError(`--part must be one of ${PARTS.join(', ')}, got "${value}"`)
  const rest = [...argv]
  rest.splice(i, inline ? 1 : 2)
  return { part: value as Part, rest }
}

async function startKind(kind: HotKind) {
  const file = kind === 'before' ? join(resolve(BEFORE_TREE!), 'bench/http/server.ts') : SERVER_FILE
  const nodeOptions = process.env.NODE_OPTIONS
  const extra = [
    ...(CPU_PROF_DIR ? [`--cpu-prof --cpu-prof-dir=${resolve(CPU_PROF_DIR)}`] : []),
    ...(PERF_DIR ? ['--perf-basic-prof'] : []),
  ]
  if (extra.length > 0) process.env.NODE_OPTIONS = [nodeOptions ?? '', ...extra].join(' ').trim()
  try {
    return await startServer(file, [kind === 'before' ? 'plinth' : kind], `the ${kind} server`)
  } finally {
    if (nodeOptions === undefined) delete process.env.NODE_OPTIONS
    else process.env.NODE_OPTIONS = nodeOptions
  }
}

/** `perf record` of `pid`'s main thread for `seconds`, into `file` (BENCH_HTTP_PERF). */
function recordPerf(pid: number, seconds: number, file: string): ChildProcess {
  return spawn(
    'perf',
    [
      'record',
      '--quiet',
      '-e',
      'cpu-clock',
      '-g',
      '-t',
      String(pid),
      '-o',
      file,
      '--',
      'sleep',
      String(seconds),
    ],
    { stdio: ['ignore', 'ignore', 'inherit'] },
  )
}

/** Fails early, with what to do, when BENCH_HTTP_PERF is set and `perf` cannot run. */
function checkPerf(): void {
  try {
    execFileSync('perf', ['--version'], { stdio: 'ignore' })
  } catch {
    throw new UsageError('BENCH_HTTP_PERF needs Linux perf on the PATH (Debian: apt-get install linux-perf)')
  }
}

/** Each thread's CPU since `before` per response, in microseconds, heaviest first (threads under 0.5 us left out). */
function usByThread(before: Map<string, number>, pid: number | undefined, sample: Sample): string {
  const served = Math.max(sample.count ?? 0, 1)
  return [...threadCpuMs(pid)]
    .map(([thread, ms]) => [thread, ((ms - (before.get(thread) ?? 0)) * 1000) / served] as const)
    .filter(([, us]) => us >= 0.5)
    .sort((a, b) => b[1] - a[1])
    .map(([thread, us]) => `${thread} ${us.toFixed(1)} us`)
    .join(', ')
}

const url = (port: number) => `http://${HOST}:${port}${ROUTE}`

/** One plain request: the route must answer 200 with JSON; returns the body. */
async function fetchRoute(kind: HotKind, port: number): Promise<string> {
  const res = await fetch(url(port), {
    headers: { connection: 'close' },
    signal: AbortSignal.timeout(5000),
  })
  const body = await res.text()
  if (res.status !== 200 || !res.headers.get('content-type')?.startsWith('application/json')) {
    throw new Error(`the ${kind} server answered ${res.status} ${res.headers.get('content-type')}: ${body}`)
  }
  return body
}

async function main(): Promise<number> {
  const { part, rest } = takePart(process.argv.slice(2))
  const { duration, rounds } = parseOptions(rest, USAGE)
  const problems: string[] = []
  let hot: Record<string, unknown> | undefined
  if (part !== 'users') {
    const result = await hotPart(duration, rounds, problems)
    if (result === 130) return 130
    hot = result
  }
  let users: UsersSummary | undefined
  if (part !== 'hot') {
    users = await runUsers(duration, problems)
    if (isInterrupted()) return 130
  }
  for (const problem of problems) console.error(`error: ${problem}`)
  console.log(
    JSON.stringify({
      bench: 'http',
      ...(hot ?? {}),
      ...(users
        ? {
            users: {
              connections: USERS,
              offeredRate: USERS_RATE,
              durationSeconds: duration,
              capacityStepSeconds: CAPACITY_SECONDS,
              results: users.results,
              met: users.met,
            },
          }
        : {}),
      ok: problems.length === 0,
    }),
  )
  return problems.length === 0 ? 0 : 1
}

/** GET /api/v1 at 100 connections, bare vs plinth: the JSON fields of the summary, or 130. */
async function hotPart(
  duration: number,
  rounds: number,
  problems: string[],
): Promise<Record<string, unknown> | 130> {
  if (PERF_DIR) {
    checkPerf()
    mkdirSync(resolve(PERF_DIR), { recursive: true })
  }
  const cpuList = cpus()
  const seconds = rounds * KINDS.length * (duration + WARMUP_SECONDS)
  console.log(
    `bench/http: GET ${ROUTE} on ${HOST}, ${CONNECTIONS} connections, ${duration} s measured after a ` +
      `${WARMUP_SECONDS} s warm-up, ${rounds} round(s) alternating bare and plinth (about ${seconds} s of load)`,
  )
  if (FIXED_RATE !== undefined)
    console.log(`measured runs at a fixed offered load of ${FIXED_RATE} requests/s (BENCH_HTTP_RATE)`)
  const loadBefore = round(loadavg()[0]!, 2)
  console.log(
    `node ${process.version}, ${cpuList.length} CPU(s) ${cpuList[0]?.model.trim() ?? ''}, load average ${loadBefore}`,
  )
  if (loadBefore > cpuList.length / 2) {
    console.log('warning: the machine is already busy; expect noisy figures (both servers share the noise)')
  }
  console.log('')

  const samples: Record<HotKind, Sample[]> = { bare: [], plinth: [], before: [] }
  // Server CPU (every thread) per response served, in microseconds: far steadier than requests/s
  // on a shared machine, since other load stretches wall time but not the work each request costs.
  const cpuPerRequest: Record<HotKind, number[]> = { bare: [], plinth: [], before: [] }
  const bodies = new Map<HotKind, string>()
  for (let r = 1; r <= rounds; r++) {
    for (const kind of KINDS) {
      const server = await startKind(kind)
      try {
        if (!bodies.has(kind)) bodies.set(kind, await fetchRoute(kind, server.ready.port))
        await warmUp(
          { url: url(server.ready.port) },
          CONNECTIONS,
          WARMUP_SECONDS,
          `${kind} warm-up, round ${r}`,
          problems,
        )
        const cpuBefore = processCpuMs(server.pid)
        const threadsBefore = BY_THREAD ? threadCpuMs(server.pid) : undefined
        const perfFile = PERF_DIR && server.pid ? join(resolve(PERF_DIR), `${kind}-${r}.data`) : undefined
        const perf = perfFile ? recordPerf(server.pid!, duration, perfFile) : undefined
        const sample = await load({ url: url(server.ready.port) }, CONNECTIONS, duration, FIXED_RATE)
        const cpuAfter = processCpuMs(server.pid)
        if (perf && perf.exitCode === null) await once(perf, 'exit')
        if (threadsBefore)
          console.log(`  ${kind} server CPU by thread: ${usByThread(threadsBefore, server.pid, sample)}`)
        if (perfFile && perf?.exitCode !== 0) {
          // Its own message (no permission: kernel.perf_event_paranoid) is on stderr above.
          console.log(`  ${kind} server, perf: no recording (perf record exited ${perf?.exitCode})`)
        } else if (perfFile) {
          console.log(`  ${kind} server, perf (${perfFile}):`)
          for (const line of attributionLines(attributePerfData(perfFile), sample.count, 12))
            console.log(line)
        }
        if (isInterrupted()) return 130
        samples[kind].push(sample)
        const us =
          cpuBefore !== undefined && cpuAfter !== undefined && sample.count
            ? ((cpuAfter - cpuBefore) * 1000) / sample.count
            : undefined
        if (us !== undefined) cpuPerRequest[kind].push(us)
        console.log(
          `${roundLine(r, rounds, kind, sample)}${us === undefined ? '' : `  server ${num(round(us, 1))} us CPU/request`}`,
        )
      } finally {
        await stopServer(server, kind, problems)
        // The JavaScript symbol map --perf-basic-prof wrote for this child, kept beside its
        // recording (bench/http/perf.ts puts it back to read the recording again).
        if (PERF_DIR && server.pid) {
          keepPerfMap(server.pid, join(resolve(PERF_DIR), `${kind}-${r}`))
          removeV8Logs(server.pid)
        }
      }
    }
  }
  for (const kind of KINDS) {
    if (bodies.get(kind) !== bodies.get('bare'))
      problems.push(`the servers answer differently: bare ${bodies.get('bare')}, ${kind} ${bodies.get(kind)}`)
  }

  const bare = aggregate(samples.bare)
  const plinth = aggregate(samples.plinth)
  const before = BEFORE_TREE ? aggregate(samples.before) : undefined
  const rows = [['bare', bare], ['plinth', plinth], ...(before ? [['before', before] as const] : [])] as const
  for (const [kind, s] of rows) {
    if (s.errors + s.non2xx > 0) problems.push(`${kind}: ${s.errors} errors, ${s.non2xx} non-2xx responses`)
  }
  const ratio = round(plinth.rps / bare.rps, 3)
  const ratioMet = ratio >= TARGET_RATIO
  const p99Met = plinth.p99Ms < TARGET_P99_MS
  console.log(header('server', rounds))
  for (const [kind, s] of rows) console.log(sampleRow(kind, s))
  console.log(
    `\nratio plinth/bare: ${ratio.toFixed(3)}   target >= ${TARGET_RATIO}: ${ratioMet ? 'met' : 'MISSED'}`,
  )
  console.log(
    `plinth p99: ${num(plinth.p99Ms)} ms   target < ${TARGET_P99_MS} ms: ${p99Met ? 'met' : 'MISSED'}`,
  )
  // Medians of the rounds; absent where /proc cannot be read (not Linux).
  const cpu =
    cpuPerRequest.bare.length > 0 && cpuPerRequest.plinth.length > 0
      ? {
          bare: round(median(cpuPerRequest.bare), 1),
          plinth: round(median(cpuPerRequest.plinth), 1),
        }
      : undefined
  const cpuRatio = cpu ? round(cpu.bare / cpu.plinth, 3) : undefined
  if (cpu) {
    console.log(
      `server CPU per request: bare ${num(cpu.bare)} us, plinth ${num(cpu.plinth)} us   ` +
        `bare/plinth ${cpuRatio!.toFixed(3)} (the throughput ratio a CPU-bound server would reach)`,
    )
  }
  const beforeFigures =
    before && BEFORE_TREE
      ? {
          tree: BEFORE_TREE,
          ...before,
          ratio: round(before.rps / bare.rps, 3),
          ...(cpuPerRequest.before.length > 0
            ? { cpuPerRequestUs: round(median(cpuPerRequest.before), 1) }
            : {}),
        }
      : undefined
  if (beforeFigures) {
    console.log(
      `before (${BEFORE_TREE}): ratio before/bare ${beforeFigures.ratio.toFixed(3)}` +
        (beforeFigures.cpuPerRequestUs === undefined
          ? ''
          : `, server CPU per request ${num(beforeFigures.cpuPerRequestUs)} us`),
    )
  }
  return {
    route: `GET ${ROUTE}`,
    connections: CONNECTIONS,
    durationSeconds: duration,
    warmupSeconds: WARMUP_SECONDS,
    rounds,
    aggregate: 'median',
    node: process.version,
    cpus: cpuList.length,
    loadAverageBefore: loadBefore,
    ...(FIXED_RATE !== undefined ? { offeredRate: FIXED_RATE } : {}),
    bare,
    plinth,
    ratio,
    ...(cpu ? { cpuPerRequestUs: cpu, cpuRatio } : {}),
    ...(beforeFigures ? { before: beforeFigures } : {}),
    targets: {
      ratio: { min: TARGET_RATIO, met: ratioMet },
      plinthP99Ms: { max: TARGET_P99_MS, met: p99Met },
    },
  }
}

await runBenchmark(main, USAGE)
