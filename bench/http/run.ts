/**
 * HTTP benchmark: the same trivial route (`GET /api/v1`) served by bare Fastify and by Plinth's
 * full HTTP stack, each in its own child process started one at a time, driven by autocannon on
 * loopback from this process. Rounds alternate (bare, plinth, bare, plinth …); the table shows the
 * median of the rounds. Exits 0 whether or not the targets are met; 1 when a server fails to start
 * or stop, or answers anything but 2xx; 2 on bad arguments; 130 when interrupted.
 *
 * Usage: node bench/http/run.ts [--duration <s>] [--rounds <n>]   (or BENCH_DURATION=<s>)
 */
import type { ChildProcess } from 'node:child_process'
import { fork } from 'node:child_process'
import { cpus, loadavg } from 'node:os'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { aggregate, load, round, type Sample, stopLoad } from './load.ts'
import type { ServerKind, ServerMessage } from './server.ts'

const ROUTE = '/api/v1'
const HOST = '127.0.0.1'
const CONNECTIONS = 100
const WARMUP_SECONDS = 2
const DURATION = { default: 10, min: 1, max: 60 }
const ROUNDS = { default: 3, min: 1, max: 9 }
const TARGET_RATIO = 0.6
const TARGET_P99_MS = 50
const START_TIMEOUT_MS = 60_000
/** The server gives its graceful close 5 s; past this it is killed. */
const STOP_TIMEOUT_MS = 8_000
const KINDS: readonly ServerKind[] = ['bare', 'plinth']
const SERVER_FILE = fileURLToPath(new URL('./server.ts', import.meta.url))

const USAGE = `Usage: node bench/http/run.ts [--duration <seconds>] [--rounds <n>]

  --duration  measured seconds per run, ${DURATION.min}-${DURATION.max} (default ${DURATION.default}; BENCH_DURATION sets it too)
  --rounds    runs per server, alternating bare and plinth, ${ROUNDS.min}-${ROUNDS.max} (default ${ROUNDS.default})`

class UsageError extends Error {}

function boundedInt(name: string, raw: string | undefined, range: typeof DURATION): number {
  if (raw === undefined || raw === '') return range.default
  const value = Number(raw)
  if (!Number.isInteger(value) || value < range.min || value > range.max) {
    throw new UsageError(`${name} must be a whole number from ${range.min} to ${range.max}, got "${raw}"`)
  }
  return value
}

function parseOptions(argv: readonly string[]): { duration: number; rounds: number } {
  const { values } = parseArgs({
    args: [...argv],
    options: { duration: { type: 'string' }, rounds: { type: 'string' }, help: { type: 'boolean' } },
  })
  if (values.help) {
    console.log(USAGE)
    process.exit(0)
  }
  return {
    duration: boundedInt('--duration', values.duration ?? process.env.BENCH_DURATION, DURATION),
    rounds: boundedInt('--rounds', values.rounds, ROUNDS),
  }
}

// What a Ctrl-C (or any failure) must clean up.
const children = new Set<ChildProcess>()
let interrupted = false

function stopChild(child: ChildProcess): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode === 0)
  return new Promise((resolve) => {
    const kill = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS)
    child.once('exit', (code) => {
      clearTimeout(kill)
      resolve(code === 0)
    })
    if (child.connected) child.send('stop')
    else child.kill('SIGTERM')
  })
}

async function startServer(kind: ServerKind): Promise<{ port: number; stop: () => Promise<boolean> }> {
  if (interrupted) throw new Error('interrupted')
  const child = fork(SERVER_FILE, [kind], {
    execPath: process.execPath,
    execArgv: [],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  children.add(child)
  child.once('exit', () => children.delete(child))
  try {
    const port = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`the ${kind} server did not start within ${START_TIMEOUT_MS / 1000} s`)),
        START_TIMEOUT_MS,
      )
      const settle = (err: Error | undefined, value = 0) => {
        clearTimeout(timer)
        if (err) reject(err)
        else resolve(value)
      }
      child.once('message', (m: ServerMessage) =>
        m.type === 'ready'
          ? settle(undefined, m.port)
          : settle(new Error(`the ${kind} server failed to start:\n${m.message}`)),
      )
      child.once('error', (err) => settle(err))
      child.once('exit', (code, signal) =>
        settle(new Error(`the ${kind} server exited (${signal ?? code}) before it was ready`)),
      )
    })
    return { port, stop: () => stopChild(child) }
  } catch (err) {
    await stopChild(child)
    throw err
  }
}

const url = (port: number) => `http://${HOST}:${port}${ROUTE}`

/** One plain request: the route must answer 200 with JSON; returns the body. */
async function fetchRoute(kind: ServerKind, port: number): Promise<string> {
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

const num = (value: number) => value.toLocaleString('en-US', { maximumFractionDigits: 2 })

function row(cells: readonly (string | number)[]): string {
  const widths = [8, 12, 9, 9, 8, 8]
  return cells
    .map((c, i) => (i === 0 ? String(c).padEnd(widths[i]!) : String(c).padStart(widths[i]!)))
    .join('  ')
}

async function main(): Promise<number> {
  const { duration, rounds } = parseOptions(process.argv.slice(2))
  const cpuList = cpus()
  const seconds = rounds * KINDS.length * (duration + WARMUP_SECONDS)
  console.log(
    `bench/http: GET ${ROUTE} on ${HOST}, ${CONNECTIONS} connections, ${duration} s measured after a ` +
      `${WARMUP_SECONDS} s warm-up, ${rounds} round(s) alternating bare and plinth (about ${seconds} s of load)`,
  )
  const loadBefore = round(loadavg()[0]!, 2)
  console.log(
    `node ${process.version}, ${cpuList.length} CPU(s) ${cpuList[0]?.model.trim() ?? ''}, load average ${loadBefore}`,
  )
  if (loadBefore > cpuList.length / 2) {
    console.log('warning: the machine is already busy; expect noisy figures (both servers share the noise)')
  }
  console.log('')

  const samples: Record<ServerKind, Sample[]> = { bare: [], plinth: [] }
  const bodies = new Map<ServerKind, string>()
  const problems: string[] = []
  for (let r = 1; r <= rounds; r++) {
    for (const kind of KINDS) {
      const server = await startServer(kind)
      try {
        if (!bodies.has(kind)) bodies.set(kind, await fetchRoute(kind, server.port))
        const warm = await load(url(server.port), CONNECTIONS, WARMUP_SECONDS)
        if (warm.errors + warm.non2xx > 0) {
          problems.push(`${kind} warm-up, round ${r}: ${warm.errors} errors, ${warm.non2xx} non-2xx`)
        }
        const sample = await load(url(server.port), CONNECTIONS, duration)
        if (interrupted) return 130
        samples[kind].push(sample)
        console.log(
          `round ${r}/${rounds} ${kind.padEnd(6)}  ${num(Math.round(sample.rps))} req/s  ` +
            `p50 ${num(round(sample.p50Ms, 2))} ms  p99 ${num(round(sample.p99Ms, 2))} ms  ` +
            `errors ${sample.errors}  non-2xx ${sample.non2xx}  load generator ${sample.clientCpu.toFixed(2)} core`,
        )
      } finally {
        if (!(await server.stop()) && !interrupted) problems.push(`the ${kind} server did not stop cleanly`)
      }
    }
  }
  if (bodies.get('bare') !== bodies.get('plinth')) {
    problems.push(
      `the servers answer differently: bare ${bodies.get('bare')}, plinth ${bodies.get('plinth')}`,
    )
  }

  const bare = aggregate(samples.bare)
  const plinth = aggregate(samples.plinth)
  for (const [kind, s] of [
    ['bare', bare],
    ['plinth', plinth],
  ] as const) {
    if (s.errors + s.non2xx > 0) problems.push(`${kind}: ${s.errors} errors, ${s.non2xx} non-2xx responses`)
  }
  const ratio = round(plinth.rps / bare.rps, 3)
  const ratioMet = ratio >= TARGET_RATIO
  const p99Met = plinth.p99Ms < TARGET_P99_MS
  const figures = rounds === 1 ? 'one run each' : `median of ${rounds} runs each`
  console.log(`\n${row(['server', 'requests/s', 'p50 ms', 'p99 ms', 'errors', 'non-2xx'])}   (${figures})`)
  for (const [kind, s] of [
    ['bare', bare],
    ['plinth', plinth],
  ] as const) {
    console.log(row([kind, num(s.rps), num(s.p50Ms), num(s.p99Ms), s.errors, s.non2xx]))
  }
  console.log(
    `\nratio plinth/bare: ${ratio.toFixed(3)}   target >= ${TARGET_RATIO}: ${ratioMet ? 'met' : 'MISSED'}`,
  )
  console.log(
    `plinth p99: ${num(plinth.p99Ms)} ms   target < ${TARGET_P99_MS} ms: ${p99Met ? 'met' : 'MISSED'}`,
  )
  for (const problem of problems) console.error(`error: ${problem}`)
  console.log(
    JSON.stringify({
      bench: 'http',
      route: `GET ${ROUTE}`,
      connections: CONNECTIONS,
      durationSeconds: duration,
      warmupSeconds: WARMUP_SECONDS,
      rounds,
      aggregate: 'median',
      node: process.version,
      cpus: cpuList.length,
      loadAverageBefore: loadBefore,
      bare,
      plinth,
      ratio,
      targets: {
        ratio: { min: TARGET_RATIO, met: ratioMet },
        plinthP99Ms: { max: TARGET_P99_MS, met: p99Met },
      },
      ok: problems.length === 0,
    }),
  )
  return problems.length === 0 ? 0 : 1
}

/** Stops the load and every server; bounded by STOP_TIMEOUT_MS. */
async function cleanUp(): Promise<void> {
  stopLoad()
  await Promise.all([...children].map(stopChild))
}

const onSignal = () => {
  // Later signals (a second Ctrl-C, the one the terminal also sends to the group) change nothing:
  // the clean-up is already bounded.
  if (interrupted) return
  interrupted = true
  console.error('\ninterrupted: stopping the servers')
  void cleanUp().finally(() => process.exit(130))
}
process.on('SIGINT', onSignal)
process.on('SIGTERM', onSignal)

try {
  process.exitCode = await main()
} catch (err) {
  if (err instanceof UsageError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
    console.error(`${(err as Error).message}\n\n${USAGE}`)
    process.exitCode = 2
  } else if (!interrupted) {
    console.error(err instanceof Error ? (err.stack ?? err.message) : err)
    process.exitCode = 1
  }
} finally {
  if (!interrupted) await cleanUp()
}
