/**
 * Audit benchmark: what recording an audit row costs a write, on the PostgreSQL server. In one run:
 *
 * - `plain`: `POST /api/v1/bench/change` — an administrator's change (one transaction that reads
 *   one of 1,000 rows under a row lock and writes it back: applyChange) through Plinth's whole HTTP
 *   stack as production runs it (the baseline);
 * - `audited`: `POST /api/v1/bench/audited-change` — the same change plus its audit row in the same
 *   transaction, with the sealer chaining rows in the background.
 *
 * Each runs on a fresh server child at 100 connections; rounds alternate plain, audited …; the
 * table shows the median of the rounds. Then the same two changes without HTTP (WRITERS concurrent
 * transactions in this process), which shows the storage cost alone (no target). At the end the
 * chain must verify and hold exactly one row per audited change. Exits 0 whether or not the target
 * is met; 1 when the measurement is broken (a server fails, a non-2xx answer, a chain that does not
 * verify or a row count that does not match); 2 on bad arguments; 130 when interrupted.
 *
 * Beside throughput it reports CPU per request (per commit without HTTP): the server child's, the
 * scratch database's PostgreSQL backends' (from /proc) and the load generator's. On this CPU-bound
 * machine throughput follows that total, and a machine busy with other work stretches it far less
 * than it stretches throughput: `cpu ratio plain/audited` is the figure to compare when the load
 * average was high (docs/decisions/0035-audited-write-cost.md).
 *
 * Usage: node bench/audit/run.ts [--duration <s>] [--rounds <n>]   (or BENCH_DURATION=<s>)
 * The server: BENCH_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/postgres); a scratch
 * database is created on it and dropped afterwards.
 */
import { randomUUID } from 'node:crypto'
import { cpus, loadavg } from 'node:os'
import { createHistogram } from 'node:perf_hooks'
import { fileURLToPath } from 'node:url'
import { sql } from 'kysely'
import { createPlinth, type Plinth } from '../../src/app/create-plinth.ts'
import { loadConfig } from '../../src/config/load-config.ts'
import { auditDiff } from '../../src/core/audit.ts'
import { verifyAuditChain } from '../../src/modules/audit/audit-chain.ts'
import { createLogger, logDestination } from '../../src/observability/logger.ts'
import { isInterrupted, processCpuMs, runBenchmark, startServer, stopServer } from '../lib/children.ts'
import { aggregate, load, median, type Request, round, type Sample, warmUp } from '../lib/load.ts'
import { DURATION, parseOptions, ROUNDS } from '../lib/options.ts'
import { productionEnv } from '../lib/server-child.ts'
import { header, num, roundLine, row, sampleRow } from '../lib/table.ts'
import {
  ACTION,
  AUDITED_CHANGE,
  applyChange,
  CHANGE,
  ROWS,
  type ServerMessage,
  scratchDatabase,
  sharedKeys,
  withClient,
} from './protocol.ts'

const HOST = '127.0.0.1'
const CONNECTIONS = 100
const WARMUP_SECONDS = 2
/** Concurrent transactions of the storage-only runs (the pool holds them all). */
const WRITERS = 16
const STORAGE_SECONDS = 5
const TARGET_RATIO = 0.8
const SERVER_URL = process.env.BENCH_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres'
const SERVER_FILE = fileURLToPath(new URL('./server.ts', import.meta.url))

type Kind = 'plain' | 'audited'
const KINDS: readonly Kind[] = ['plain', 'audited']
const ROUTES: Record<Kind, string> = {
  plain: `POST /api/v1${CHANGE}`,
  audited: `POST /api/v1${AUDITED_CHANGE}`,
}

const USAGE = `Usage: node bench/audit/run.ts [--duration <seconds>] [--rounds <n>]

  --duration  measured seconds per HTTP run, ${DURATION.min}-${DURATION.max} (default ${DURATION.default}; BENCH_DURATION sets it too);
              the storage-only runs take at most ${STORAGE_SECONDS} s each
  --rounds    runs of each, alternating plain and audited, ${ROUNDS.min}-${ROUNDS.max} (default ${ROUNDS.default})

The PostgreSQL server is BENCH_POSTGRES_URL (default ${SERVER_URL}): a scratch database is created
on it and dropped afterwards.`

type Ready = Extract<ServerMessage, { type: 'ready' }>

const requestFor = (kind: Kind, server: Ready): Request => ({
  url: `http://${HOST}:${server.port}/api/v1${kind === 'plain' ? CHANGE : AUDITED_CHANGE}`,
  method: 'POST',
  headers: { authorization: `Bearer ${server.token}` },
})

/**
 * CPU (ms) each PostgreSQL backend connected to `database` has used so far, by pid (from /proc; empty
 * where the server's processes are not visible). Backends of the pool live through a run.
 */
async function backendsCpuMs(database: string): Promise<Map<number, number>> {
  const { rows } = await withClient(SERVER_URL, (c) =>
    c.query<{ pid: number }>('select pid from pg_stat_activity where datname = $1', [database]),
  )
  const out = new Map<number, number>()
  for (const { pid } of rows) {
    const ms = processCpuMs(pid)
    if (ms !== undefined) out.set(pid, ms)
  }
  return out
}

/** CPU the backends spent between two readings (a backend that appeared in between counts whole). */
function spentMs(before: Map<number, number>, after: Map<number, number>): number {
  let ms = 0
  for (const [pid, now] of after) ms += now - (before.get(pid) ?? 0)
  return ms
}

/**
 * CPU per request or commit, in µs: the application (the server child, or this process without
 * HTTP), PostgreSQL (the backends of the scratch database) and the load generator. On a CPU-bound
 * machine throughput follows the total, and a busy machine stretches it far less than throughput, so
 * the ratio of totals is the figure to trust when the load average is high.
 */
interface Cpu {
  readonly appUs: number
  readonly dbUs: number
  readonly clientUs: number
  readonly totalUs: number
}

const cpuOf = (appMs: number, dbMs: number, clientMs: number, n: number): Cpu => ({
  appUs: Math.round((appMs * 1000) / n),
  dbUs: Math.round((dbMs * 1000) / n),
  clientUs: Math.round((clientMs * 1000) / n),
  totalUs: Math.round(((appMs + dbMs + clientMs) * 1000) / n),
})

const medianCpu = (list: readonly Cpu[]): Cpu => ({
  appUs: Math.round(median(list.map((c) => c.appUs))),
  dbUs: Math.round(median(list.map((c) => c.dbUs))),
  clientUs: Math.round(median(list.map((c) => c.clientUs))),
  totalUs: Math.round(median(list.map((c) => c.totalUs))),
})

const cpuLine = (c: Cpu, app: string) =>
  `cpu/op ${num(c.totalUs)} µs (${app} ${num(c.appUs)}, postgres ${num(c.dbUs)}, load generator ${num(c.clientUs)})`

/** One plain request: the route must answer 200 with the row it changed. */
async function check(kind: Kind, server: Ready): Promise<void> {
  const r = requestFor(kind, server)
  const res = await fetch(r.url, {
    method: 'POST',
    headers: { ...r.headers, connection: 'close' },
    signal: AbortSignal.timeout(5000),
  })
  const body = await res.text()
  if (res.status !== 200 || typeof (JSON.parse(body) as { value?: unknown }).value !== 'number')
    throw new Error(`${ROUTES[kind]} answered ${res.status}: ${body}`)
}

interface StorageSample {
  readonly tps: number
  readonly p50Ms: number
  readonly p99Ms: number
  readonly errors: number
  readonly cpu: Cpu
}

/** The change without HTTP: WRITERS transactions at a time for `seconds`. */
async function storageRun(
  plinth: Plinth,
  database: string,
  kind: Kind,
  seconds: number,
): Promise<StorageSample> {
  const latencyUs = createHistogram()
  const actor = { type: 'user' as const, id: randomUUID() }
  let commits = 0
  let errors = 0
  const db0 = await backendsCpuMs(database)
  const cpu0 = process.cpuUsage()
  const started = performance.now()
  const deadline = started + seconds * 1000
  const change = async () => {
    const id = 1 + Math.floor(Math.random() * ROWS)
    await plinth.db.kysely.transaction().execute(async (trx) => {
      const { before, after } = await applyChange(trx, kind, id)
      if (kind === 'plain') return
      await plinth.context.audit.record(trx, {
        action: ACTION,
        actor,
        target: { type: 'bench-item', id: String(id) },
        outcome: 'success',
        ip: '203.0.113.7',
        userAgent: 'bench/audit',
        requestId: randomUUID(),
        changes: auditDiff({ value: before }, { value: after }),
      })
    })
  }
  await Promise.all(
    Array.from({ length: WRITERS }, async () => {
      while (performance.now() < deadline && !isInterrupted()) {
        const t = performance.now()
        try {
          await change()
          commits++
          latencyUs.record(Math.max(1, Math.round((performance.now() - t) * 1000)))
        } catch {
          errors++
        }
      }
    }),
  )
  const elapsed = performance.now() - started
  // The rows of this run sealed inside the measurement, as the sealer would have in a longer run.
  if (kind === 'audited') await plinth.context.audit.seal()
  const cpu = process.cpuUsage(cpu0)
  const dbMs = spentMs(db0, await backendsCpuMs(database))
  return {
    tps: commits / (elapsed / 1000),
    cpu: cpuOf((cpu.user + cpu.system) / 1000, dbMs, 0, Math.max(1, commits)),
    p50Ms: latencyUs.count > 0 ? latencyUs.percentile(50) / 1000 : 0,
    p99Ms: latencyUs.count > 0 ? latencyUs.percentile(99) / 1000 : 0,
    errors,
  }
}

/** The storage-only runs, on a Plinth in this process (its sealer running as in production). */
async function storageRuns(
  databaseUrl: string,
  database: string,
  rounds: number,
): Promise<Record<Kind, StorageSample>> {
  const config = loadConfig({
    env: {
      ...productionEnv(HOST),
      ...sharedKeys(),
      DATABASE_URL: databaseUrl,
      PLINTH_ROLE: 'api',
      PLINTH_DB_POOL_MAX: String(WRITERS + 2),
    },
    envFile: false,
  })
  const plinth = await createPlinth({ config, logger: createLogger(config, logDestination('/dev/null')) })
  const samples: Record<Kind, StorageSample[]> = { plain: [], audited: [] }
  try {
    await plinth.prepare()
    for (const kind of KINDS) await storageRun(plinth, database, kind, 1)
    for (let r = 1; r <= rounds && !isInterrupted(); r++) {
      for (const kind of KINDS) {
        const s = await storageRun(plinth, database, kind, STORAGE_SECONDS)
        samples[kind].push(s)
        console.log(
          `storage ${r}/${rounds} ${kind.padEnd(7)}  ${num(Math.round(s.tps))} commits/s  ` +
            `p50 ${num(round(s.p50Ms, 2))} ms  p99 ${num(round(s.p99Ms, 2))} ms  errors ${s.errors}  ${cpuLine(s.cpu, 'node')}`,
        )
      }
    }
  } finally {
    await plinth.shutdown()
  }
  const med = (list: StorageSample[]): StorageSample => ({
    tps: Math.round(median(list.map((s) => s.tps))),
    p50Ms: round(median(list.map((s) => s.p50Ms)), 2),
    p99Ms: round(median(list.map((s) => s.p99Ms)), 2),
    errors: list.reduce((n, s) => n + s.errors, 0),
    cpu: medianCpu(list.map((s) => s.cpu)),
  })
  return { plain: med(samples.plain), audited: med(samples.audited) }
}

async function main(): Promise<number> {
  const { duration, rounds } = parseOptions(process.argv.slice(2), USAGE)
  const cpuList = cpus()
  const loadBefore = round(loadavg()[0]!, 2)
  console.log(
    `bench/audit: ${ROUTES.plain} and ${ROUTES.audited} at ${CONNECTIONS} connections for ${duration} s after a ${WARMUP_SECONDS} s warm-up, ` +
      `${rounds} round(s) alternating; then the same changes without HTTP, ${WRITERS} transactions at a time for ${STORAGE_SECONDS} s each`,
  )
  console.log(
    `database: PostgreSQL at ${SERVER_URL.replace(/\/\/[^@/]*@/, '//…@')} (a scratch database); ` +
      `node ${process.version}, ${cpuList.length} CPU(s) ${cpuList[0]?.model.trim() ?? ''}, load average ${loadBefore}`,
  )
  if (loadBefore > cpuList.length / 2)
    console.log('warning: the machine is already busy; expect noisy figures (every side shares the noise)')
  console.log('')

  const scratch = await scratchDatabase(SERVER_URL, 'plinth_bench_audit')
  const { name, url: databaseUrl } = scratch
  sharedKeys()
  const problems: string[] = []
  const samples: Record<Kind, Sample[]> = { plain: [], audited: [] }
  const cpuSamples: Record<Kind, Cpu[]> = { plain: [], audited: [] }
  let storage: Record<Kind, StorageSample> | undefined
  let chain: Awaited<ReturnType<typeof verifyAuditChain>> | undefined
  try {
    const checked = new Set<Kind>()
    for (let r = 1; r <= rounds; r++) {
      for (const kind of KINDS) {
        const server = await startServer<Ready>(SERVER_FILE, [databaseUrl], `the server (${kind})`)
        try {
          if (!checked.has(kind)) {
            await check(kind, server.ready)
            checked.add(kind)
          }
          const request = requestFor(kind, server.ready)
          await warmUp(request, CONNECTIONS, WARMUP_SECONDS, `${kind} warm-up, round ${r}`, problems)
          const db0 = await backendsCpuMs(name)
          const server0 = processCpuMs(server.pid)
          const sample = await load(request, CONNECTIONS, duration)
          const serverMs = (processCpuMs(server.pid) ?? Number.NaN) - (server0 ?? Number.NaN)
          const dbMs = spentMs(db0, await backendsCpuMs(name))
          if (isInterrupted()) return 130
          samples[kind].push(sample)
          const cpu = cpuOf(
            serverMs,
            dbMs,
            sample.clientCpu * duration * 1000,
            Math.max(1, sample.count ?? 0),
          )
          cpuSamples[kind].push(cpu)
          console.log(`${roundLine(r, rounds, kind, sample)}  ${cpuLine(cpu, 'server')}`)
        } finally {
          await stopServer(server, kind, problems)
        }
      }
    }
    storage = await storageRuns(databaseUrl, name, rounds)
    if (isInterrupted()) return 130

    // Every server sealed its rows on the way out; the chain must hold one row per audited change.
    const verifier = await createPlinth({
      config: loadConfig({
        env: {
          ...productionEnv(HOST),
          ...sharedKeys(),
          DATABASE_URL: databaseUrl,
          PLINTH_MIGRATE_ON_START: 'false',
        },
        envFile: false,
      }),
      logger: createLogger(
        loadConfig({ env: { PLINTH_LOG_LEVEL: 'silent' }, envFile: false }),
        logDestination('/dev/null'),
      ),
    })
    try {
      await verifier.db.connect()
      await verifier.context.audit.seal()
      chain = await verifyAuditChain(verifier.db.kysely)
      const db = verifier.db.kysely
      const { rows: counted } = await sql<{ changes: string; rows: string }>`
        select (select sum(audited) from bench_items) as changes,
               (select count(*) from audit_log where action = ${ACTION}) as rows`.execute(db)
      const { changes, rows } = counted[0]!
      if (!chain.ok) problems.push(`the audit chain does not verify: ${chain.failure?.message}`)
      if (chain.unsealed > 0) problems.push(`${chain.unsealed} audit rows were left unsealed`)
      if (changes !== rows) problems.push(`${changes} audited changes but ${rows} audit rows`)
    } finally {
      await verifier.shutdown()
    }
  } finally {
    await scratch.drop()
  }

  const results = { plain: aggregate(samples.plain), audited: aggregate(samples.audited) }
  for (const kind of KINDS) {
    const s = results[kind]
    if (s.errors + s.non2xx > 0) problems.push(`${kind}: ${s.errors} errors, ${s.non2xx} non-2xx responses`)
    if (storage && storage[kind].errors > 0)
      problems.push(`storage ${kind}: ${storage[kind].errors} failed transactions`)
  }
  const ratio = round(results.audited.rps / results.plain.rps, 3)
  const cpu = { plain: medianCpu(cpuSamples.plain), audited: medianCpu(cpuSamples.audited) }
  const cpuRatio = round(cpu.plain.totalUs / cpu.audited.totalUs, 3)
  const ratioMet = ratio >= TARGET_RATIO
  const storageRatio = storage ? round(storage.audited.tps / storage.plain.tps, 3) : 0
  console.log(header('run', rounds))
  for (const kind of KINDS) console.log(sampleRow(kind, results[kind]))
  console.log(
    `\nratio audited/plain: ${ratio.toFixed(3)}   target >= ${TARGET_RATIO}: ${ratioMet ? 'met' : 'MISSED'}`,
  )
  for (const kind of KINDS) console.log(`${kind.padEnd(8)} ${cpuLine(cpu[kind], 'server')}`)
  console.log(
    `cpu ratio plain/audited: ${cpuRatio.toFixed(3)}   (what the throughput ratio is on a CPU-bound machine; trust it over the one above when the load average was high)`,
  )
  if (storage) {
    console.log(
      `\n${row(['storage', 'commits/s', 'p50 ms', 'p99 ms', 'errors'])}   (no HTTP, ${WRITERS} writers)`,
    )
    for (const kind of KINDS) {
      const s = storage[kind]
      console.log(row([kind, num(s.tps), num(s.p50Ms), num(s.p99Ms), s.errors]))
    }
    for (const kind of KINDS) console.log(`${kind.padEnd(8)} ${cpuLine(storage[kind].cpu, 'node')}`)
    console.log(
      `cpu ratio plain/audited without HTTP: ${round(storage.plain.cpu.totalUs / storage.audited.cpu.totalUs, 3).toFixed(3)}`,
    )
    console.log(
      `ratio audited/plain without HTTP: ${storageRatio.toFixed(3)}   (the audit row's own cost; no target)`,
    )
  }
  console.log(
    `audit chain: ${chain?.ok ? 'verified' : 'NOT verified'}, ${num(chain?.checked ?? 0)} rows, ${chain?.unsealed ?? '?'} unsealed`,
  )
  for (const problem of problems) console.error(`error: ${problem}`)
  console.log(
    JSON.stringify({
      bench: 'audit',
      routes: ROUTES,
      database: 'postgres',
      settings: { connections: CONNECTIONS, seconds: duration, warmup: WARMUP_SECONDS },
      rounds,
      aggregate: 'median',
      node: process.version,
      cpus: cpuList.length,
      loadAverageBefore: loadBefore,
      ...results,
      ratio,
      cpu: { ...cpu, ratio: cpuRatio },
      storage: storage
        ? {
            writers: WRITERS,
            seconds: STORAGE_SECONDS,
            ...storage,
            ratio: storageRatio,
            cpuRatio: round(storage.plain.cpu.totalUs / storage.audited.cpu.totalUs, 3),
          }
        : null,
      chain: { verified: chain?.ok ?? false, rows: chain?.checked ?? 0 },
      targets: { ratio: { min: TARGET_RATIO, met: ratioMet } },
      ok: problems.length === 0,
    }),
  )
  return problems.length === 0 ? 0 : 1
}

await runBenchmark(main, USAGE)
