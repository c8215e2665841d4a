/**
 * Auth benchmark: what authentication costs per request. In one run, against the same stack
 * (Plinth as production runs it, each run on a fresh server in its own child process):
 *
 * - `public`: `GET /api/v1`, no credentials (the baseline);
 * - `me`: `GET /api/v1/me` with a bearer session token (session lookup, permission check, a
 *   database read of the user);
 * - `whoami`: a bench-only route that needs the same session and reads nothing, so that the cost
 *   of authentication alone shows apart from `me`'s database read;
 * - `login`: `POST /api/v1/auth/login` with the right password, bounded by argon2id by design.
 *
 * Rounds alternate public, me, whoami, login …; the table shows the median of the rounds. Exits 0 whether
 * or not the target is met; 1 when a server fails to start or stop, or answers anything but 2xx;
 * 2 on bad arguments; 130 when interrupted.
 *
 * Usage: node bench/auth/run.ts [--duration <s>] [--rounds <n>]   (or BENCH_DURATION=<s>)
 */
import type { ChildProcess } from 'node:child_process'
import { fork } from 'node:child_process'
import { cpus, loadavg } from 'node:os'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { aggregate, load, type Request, round, type Sample, stopLoad } from './load.ts'
import { type ServerMessage, WHOAMI } from './protocol.ts'

const HOST = '127.0.0.1'
const CONNECTIONS = 100
/** argon2id takes ~40 ms of one core per sign-in: a few connections already keep every core busy. */
const LOGIN_CONNECTIONS = 4
const LOGIN_SECONDS = 5
const WARMUP_SECONDS = 2
const DURATION = { default: 10, min: 1, max: 60 }
const ROUNDS = { default: 3, min: 1, max: 9 }
const TARGET_RATIO = 0.7
const START_TIMEOUT_MS = 60_000
const STOP_TIMEOUT_MS = 8_000
const SERVER_FILE = fileURLToPath(new URL('./server.ts', import.meta.url))

type Kind = 'public' | 'me' | 'whoami' | 'login'
const KINDS: readonly Kind[] = ['public', 'me', 'whoami', 'login']
const ROUTES: Record<Kind, string> = {
  public: 'GET /api/v1',
  me: 'GET /api/v1/me (bearer session)',
  whoami: `GET /api/v1${WHOAMI} (bearer session, no database)`,
  login: 'POST /api/v1/auth/login',
}

type Ready = Extract<ServerMessage, { type: 'ready' }>

function requestFor(kind: Kind, server: Ready): Request {
  const base = `http://${HOST}:${server.port}/api/v1`
  if (kind === 'public') return { url: base }
  if (kind === 'me' || kind === 'whoami') {
    const path = kind === 'me' ? '/me' : WHOAMI
    return { url: `${base}${path}`, headers: { authorization: `Bearer ${server.token}` } }
  }
  return {
    url: `${base}/auth/login`,
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email: server.email, password: server.password }),
  }
}

const USAGE = `Usage: node bench/auth/run.ts [--duration <seconds>] [--rounds <n>]

  --duration  measured seconds per run of public, me and whoami, ${DURATION.min}-${DURATION.max} (default ${DURATION.default}; BENCH_DURATION sets it too);
              sign-ins run for at most ${LOGIN_SECONDS} s
  --rounds    runs of each, alternating public, me, whoami and login, ${ROUNDS.min}-${ROUNDS.max} (default ${ROUNDS.default})`

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

async function startServer(): Promise<{ ready: Ready; stop: () => Promise<boolean> }> {
  if (interrupted) throw new Error('interrupted')
  const child = fork(SERVER_FILE, [], {
    execPath: process.execPath,
    execArgv: [],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  children.add(child)
  child.once('exit', () => children.delete(child))
  try {
    const ready = await new Promise<Ready>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`the server did not start within ${START_TIMEOUT_MS / 1000} s`)),
        START_TIMEOUT_MS,
      )
      child.once('message', (m: ServerMessage) => {
        clearTimeout(timer)
        if (m.type === 'ready') resolve(m)
        else reject(new Error(`the server failed to start:\n${m.message}`))
      })
      child.once('error', (err) => {
        clearTimeout(timer)
        reject(err)
      })
      child.once('exit', (code, signal) => {
        clearTimeout(timer)
        reject(new Error(`the server exited (${signal ?? code}) before it was ready`))
      })
    })
    return { ready, stop: () => stopChild(child) }
  } catch (err) {
    await stopChild(child)
    throw err
  }
}

/** One plain request: it must answer 200 with JSON (for `me`, the signed-in user). */
async function check(kind: Kind, server: Ready): Promise<void> {
  const r = requestFor(kind, server)
  const res = await fetch(r.url, {
    method: r.method ?? 'GET',
    headers: { ...r.headers, connection: 'close' },
    ...(r.body ? { body: r.body } : {}),
    signal: AbortSignal.timeout(5000),
  })
  const body = await res.text()
  const ok =
    res.status === 200 &&
    res.headers.get('content-type')?.startsWith('application/json') &&
    (kind !== 'me' || (JSON.parse(body) as { user?: { email?: string } }).user?.email === server.email) &&
    (kind !== 'whoami' || typeof (JSON.parse(body) as { userId?: unknown }).userId === 'string')
  if (!ok) throw new Error(`${ROUTES[kind]} answered ${res.status}: ${body}`)
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
  const loginSeconds = Math.min(duration, LOGIN_SECONDS)
  const settings: Record<Kind, { connections: number; seconds: number; warmup: number }> = {
    public: { connections: CONNECTIONS, seconds: duration, warmup: WARMUP_SECONDS },
    me: { connections: CONNECTIONS, seconds: duration, warmup: WARMUP_SECONDS },
    whoami: { connections: CONNECTIONS, seconds: duration, warmup: WARMUP_SECONDS },
    login: { connections: LOGIN_CONNECTIONS, seconds: loginSeconds, warmup: 1 },
  }
  const cpuList = cpus()
  const seconds = rounds * KINDS.reduce((n, k) => n + settings[k].seconds + settings[k].warmup, 0)
  console.log(
    `bench/auth: ${ROUTES.public}, ${ROUTES.me} and ${ROUTES.whoami} at ${CONNECTIONS} connections for ${duration} s, ` +
      `${ROUTES.login} at ${LOGIN_CONNECTIONS} connections for ${loginSeconds} s, each after a warm-up; ` +
      `${rounds} round(s) alternating public, me, whoami and login (about ${seconds} s of load)`,
  )
  const loadBefore = round(loadavg()[0]!, 2)
  console.log(
    `database: ${process.env.BENCH_DATABASE_URL ? 'PostgreSQL at BENCH_DATABASE_URL' : 'embedded, in memory'}; ` +
      `node ${process.version}, ${cpuList.length} CPU(s) ${cpuList[0]?.model.trim() ?? ''}, load average ${loadBefore}`,
  )
  if (loadBefore > cpuList.length / 2) {
    console.log('warning: the machine is already busy; expect noisy figures (every side shares the noise)')
  }
  console.log('')

  const samples: Record<Kind, Sample[]> = { public: [], me: [], whoami: [], login: [] }
  const checked = new Set<Kind>()
  const problems: string[] = []
  for (let r = 1; r <= rounds; r++) {
    for (const kind of KINDS) {
      const server = await startServer()
      try {
        if (!checked.has(kind)) {
          await check(kind, server.ready)
          checked.add(kind)
        }
        const { connections, seconds: measured, warmup } = settings[kind]
        const request = requestFor(kind, server.ready)
        const warm = await load(request, connections, warmup)
        if (warm.errors + warm.non2xx > 0) {
          problems.push(`${kind} warm-up, round ${r}: ${warm.errors} errors, ${warm.non2xx} non-2xx`)
        }
        const sample = await load(request, connections, measured)
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

  const results = Object.fromEntries(KINDS.map((k) => [k, aggregate(samples[k])])) as Record<Kind, Sample>
  for (const kind of KINDS) {
    const s = results[kind]
    if (s.errors + s.non2xx > 0) problems.push(`${kind}: ${s.errors} errors, ${s.non2xx} non-2xx responses`)
  }
  const ratio = round(results.me.rps / results.public.rps, 3)
  const ratioMet = ratio >= TARGET_RATIO
  const authOnlyRatio = round(results.whoami.rps / results.public.rps, 3)
  const figures = rounds === 1 ? 'one run each' : `median of ${rounds} runs each`
  console.log(`\n${row(['run', 'requests/s', 'p50 ms', 'p99 ms', 'errors', 'non-2xx'])}   (${figures})`)
  for (const kind of KINDS) {
    const s = results[kind]
    console.log(row([kind, num(s.rps), num(s.p50Ms), num(s.p99Ms), s.errors, s.non2xx]))
  }
  console.log(
    `\nratio me/public: ${ratio.toFixed(3)}   target >= ${TARGET_RATIO}: ${ratioMet ? 'met' : 'MISSED'}`,
  )
  console.log(`ratio whoami/public: ${authOnlyRatio.toFixed(3)}   (authentication alone, no target)`)
  console.log(
    `sign-ins: ${num(results.login.rps)}/s at ${LOGIN_CONNECTIONS} connections, p99 ${num(results.login.p99Ms)} ms ` +
      '(bounded by argon2id by design; no target)',
  )
  for (const problem of problems) console.error(`error: ${problem}`)
  console.log(
    JSON.stringify({
      bench: 'auth',
      routes: ROUTES,
      database: process.env.BENCH_DATABASE_URL ? 'postgres' : 'embedded',
      settings,
      rounds,
      aggregate: 'median',
      node: process.version,
      cpus: cpuList.length,
      loadAverageBefore: loadBefore,
      ...results,
      ratio,
      authOnlyRatio,
      loginsPerSecond: results.login.rps,
      targets: { ratio: { min: TARGET_RATIO, met: ratioMet } },
      ok: problems.length === 0,
    }),
  )
  return problems.length === 0 ? 0 : 1
}

async function cleanUp(): Promise<void> {
  stopLoad()
  await Promise.all([...children].map(stopChild))
}

const onSignal = () => {
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
