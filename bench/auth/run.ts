/**
 * Auth benchmark: what authentication costs per request. In one run, against the same stack
 * (Plinth as production runs it, each run on a fresh server in its own child process):
 *
 * - `public`: `GET /api/v1`, no credentials (the baseline);
 * - `me`: `GET /api/v1/me` with a bearer session token (session lookup, permission check, a
 *   database read of the user);
 * - `whoami`: a bench-only route that needs the same session and reads nothing, so that the cost
 *   of authentication alone shows apart from `me`'s database read;
 * - `login`: `POST /api/v1/auth/login` with the right password, bounded by argon2id by design;
 *   each connection signs in as its own account (see LOGIN_CONNECTIONS in protocol.ts).
 *
 * Rounds alternate public, me, whoami, login …; the table shows the median of the rounds. Exits 0 whether
 * or not the target is met; 1 when a server fails to start or stop, or answers anything but 2xx;
 * 2 on bad arguments; 130 when interrupted.
 *
 * Usage: node bench/auth/run.ts [--duration <s>] [--rounds <n>]   (or BENCH_DURATION=<s>)
 */
import { cpus, loadavg } from 'node:os'
import { fileURLToPath } from 'node:url'
import { isInterrupted, runBenchmark, startServer, stopServer } from '../lib/children.ts'
import { aggregate, load, type Request, round, type Sample, statusText, warmUp } from '../lib/load.ts'
import { DURATION, parseOptions, ROUNDS } from '../lib/options.ts'
import { header, num, roundLine, sampleRow } from '../lib/table.ts'
import { LOGIN_CONNECTIONS, type ServerMessage, WHOAMI } from './protocol.ts'

const HOST = '127.0.0.1'
const CONNECTIONS = 100
const LOGIN_SECONDS = 5
const WARMUP_SECONDS = 2
const TARGET_RATIO = 0.7
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

/**
 * The request of `kind`; sign-ins in a load run (`each`) spread over the server's sign-in accounts,
 * one per connection.
 */
function requestFor(kind: Kind, server: Ready, each = false): Request {
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
    ...(each ? { bodies: server.logins.map((l) => JSON.stringify(l)) } : {}),
  }
}

const USAGE = `Usage: node bench/auth/run.ts [--duration <seconds>] [--rounds <n>]

  --duration  measured seconds per run of public, me and whoami, ${DURATION.min}-${DURATION.max} (default ${DURATION.default}; BENCH_DURATION sets it too);
              sign-ins run for at most ${LOGIN_SECONDS} s
  --rounds    runs of each, alternating public, me, whoami and login, ${ROUNDS.min}-${ROUNDS.max} (default ${ROUNDS.default})`

const start = () => startServer<Ready>(SERVER_FILE, [], 'the server')

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

async function main(): Promise<number> {
  const { duration, rounds } = parseOptions(process.argv.slice(2), USAGE)
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
      const server = await start()
      try {
        if (!checked.has(kind)) {
          await check(kind, server.ready)
          checked.add(kind)
        }
        const { connections, seconds: measured, warmup } = settings[kind]
        const request = requestFor(kind, server.ready, true)
        await warmUp(request, connections, warmup, `${kind} warm-up, round ${r}`, problems)
        const sample = await load(request, connections, measured)
        if (isInterrupted()) return 130
        samples[kind].push(sample)
        console.log(roundLine(r, rounds, kind, sample))
      } finally {
        await stopServer(server, kind, problems)
      }
    }
  }

  const results = Object.fromEntries(KINDS.map((k) => [k, aggregate(samples[k])])) as Record<Kind, Sample>
  for (const kind of KINDS) {
    const s = results[kind]
    if (s.errors + s.non2xx > 0)
      problems.push(`${kind}: ${s.errors} errors, ${s.non2xx} non-2xx responses${statusText(s)}`)
  }
  const ratio = round(results.me.rps / results.public.rps, 3)
  const ratioMet = ratio >= TARGET_RATIO
  const authOnlyRatio = round(results.whoami.rps / results.public.rps, 3)
  console.log(header('run', rounds))
  for (const kind of KINDS) {
    const s = results[kind]
    console.log(sampleRow(kind, s))
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

await runBenchmark(main, USAGE)
