/**
 * The embedded database's write transaction without HTTP: the bench write's shape (BEGIN, SELECT a
 * random one of 1,000 rows FOR UPDATE, UPDATE it, COMMIT) through Kysely and a `pg.Pool` of `C`
 * connections (default 10, like PLINTH_DB_POOL_MAX) to the worker's socket, `N` transactions
 * (default 3000) after 300 to warm up, `C` at a time. Prints the CPU time per transaction of each
 * thread of this process (the main thread: Kysely and pg; WorkerThread: the socket, the session
 * queue and PGlite; V8Worker: the garbage collector's helpers) and, from the worker's session queue,
 * how long the session sat owned by an open transaction waiting for that transaction's next
 * statement (decision 0036). `FILE=1`: a file-backed data directory, as `npm start`, instead of
 * `memory://`. Linux only (`/proc/self/task`).
 *
 * Usage: node bench/http/embedded-tx.ts   (N=3000 C=10 FILE=1 to change the defaults)
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { Kysely, PostgresDialect, sql } from 'kysely'
import pg from 'pg'
import pino from 'pino'
import { startEmbeddedServer } from '../../src/infra/db/embedded-server.ts'
import type { EmbeddedWorkerMessage } from '../../src/infra/db/embedded-worker.ts'
import type { SessionQueueStats } from '../../src/infra/db/session-queue.ts'

const N = Number(process.env.N ?? 3000)
const C = Number(process.env.C ?? 10)
const file = process.env.FILE === '1'
const dir = file ? mkdtempSync(join(tmpdir(), 'plinth-embedded-tx-')) : null
const server = startEmbeddedServer({
  dataDir: dir,
  logger: pino({ level: 'warn' }),
  maxConnections: 2 * C + 8,
  startTimeoutMs: 60_000,
})
await server.whenUp()
const pool = new pg.Pool({
  host: server.socketDir,
  port: server.socketPort,
  user: 'postgres',
  database: 'postgres',
  max: C,
})
const db = new Kysely<Record<string, never>>({ dialect: new PostgresDialect({ pool }) })
await sql`create table if not exists items (id integer primary key, value integer not null default 0)`.execute(
  db,
)
await sql`insert into items (id) select generate_series(1, 1000) on conflict do nothing`.execute(db)

/** CPU ms used so far by each thread of this process, keyed `<name>/<tid>`. */
function threads(): Map<string, number> {
  const out = new Map<string, number>()
  for (const tid of readdirSync('/proc/self/task')) {
    const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'))
    out.set(`${name}/${tid}`, (Number(fields[11]) + Number(fields[12])) * 10)
  }
  return out
}

/** The session queue's counters, or undefined from a worker that does not answer (an older one: a baseline run). */
function queueStats(): Promise<SessionQueueStats | undefined> {
  const worker = server.worker()
  if (!worker) throw new Error('the embedded database worker is not running')
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      worker.off('message', on)
      resolve(undefined)
    }, 2000)
    const on = (m: EmbeddedWorkerMessage) => {
      if (m.type !== 'queue-stats') return
      clearTimeout(timer)
      worker.off('message', on)
      resolve(m.stats)
    }
    worker.on('message', on)
    worker.postMessage({ type: 'queue-stats' })
  })
}

const transaction = () =>
  db.transaction().execute(async (trx) => {
    const id = 1 + Math.floor(Math.random() * 1000)
    const { rows } = await sql<{
      value: number
    }>`select value from items where id = ${id} for update`.execute(trx)
    await sql`update items set value = ${rows[0]!.value + 1} where id = ${id}`.execute(trx)
  })

async function run(n: number): Promise<void> {
  let started = 0
  await Promise.all(
    Array.from({ length: C }, async () => {
      while (started++ < n) await transaction()
    }),
  )
}

await run(300)
const q0 = await queueStats()
const before = threads()
const t0 = performance.now()
await run(N)
const ms = performance.now() - t0
const after = threads()
const q1 = await queueStats()
const perThread = [...after]
  .map(([k, v]) => [k, (v - (before.get(k) ?? 0)) / N] as const)
  .filter(([, v]) => v >= 0.005)
  .sort((a, b) => b[1] - a[1])
const total = perThread.reduce((sum, [, v]) => sum + v, 0)
console.log(
  `${N} transactions, ${C} at a time, ${file ? 'file-backed' : 'in memory'}, load average ${loadavg()[0]!.toFixed(1)}: ` +
    `${Math.round((N / ms) * 1000)} tx/s; CPU ms/tx ${total.toFixed(3)} (${perThread.map(([k, v]) => `${k.replace(/\/\d+$/, '')} ${v.toFixed(3)}`).join(', ')})`,
)
if (q0 && q1) {
  const idle = q1.idleInTransactionMs - q0.idleInTransactionMs
  const waits = q1.idleInTransactionWaits - q0.idleInTransactionWaits
  console.log(
    `session owned by an open transaction waiting for its next statement: ${(idle / N).toFixed(3)} ms/tx ` +
      `(${waits} waits, ${(idle / Math.max(waits, 1)).toFixed(3)} ms each; ${Math.round((idle / ms) * 100)} % of the run; ` +
      `${((q1.blockingMs - q0.blockingMs) / N).toFixed(3)} ms/tx with other connections' messages queued); ` +
      `session free between transactions while a BEGIN answered early waited for its first statement ${(((q1.freeWithBegunMs ?? 0) - (q0.freeWithBegunMs ?? 0)) / N).toFixed(3)} ms/tx; PGlite calls/tx ${((q1.calls - q0.calls) / N).toFixed(2)}, statement cache hits/tx ${((q1.statementHits - q0.statementHits) / N).toFixed(2)}`,
  )
}
await db.destroy()
await server.close()
if (dir) rmSync(dir, { recursive: true, force: true })
