/**
 * Where an audited change's CPU goes, without HTTP (docs/decisions/0035-audited-write-cost.md): CPU
 * per transaction of this process (Node: Kysely, node-postgres, `audit.record`, the sealer) and of
 * the scratch database's PostgreSQL backends (from /proc), for
 *
 * - `plain`: the change alone (protocol.ts applyChange);
 * - `audited`: the change plus its audit row, the sealer running as in production (the rows of a
 *   run are sealed before its CPU is read);
 * - `insert`: the change plus the audit insert with the sealer stopped, then the seal of those rows
 *   on its own, per row;
 * - with `BENCH_AUDIT_PROTOTYPE=on`, then `plain` and `proto` alternating: the change plus a row of
 *   the audit chain prototyped in seal-prototype.ts (hash at insert, one seal record per batch, no
 *   second write of the row), its sealer running (docs/decisions/0050-audit-seal-prototype.md).
 *
 * CPU time per transaction moves far less than throughput on a machine busy with other work, so
 * this is the measurement to use when the load average is high. WRITERS transactions at a time.
 *
 * Usage: node bench/audit/decompose.ts [--duration <s>] [--rounds <n>]   (BENCH_POSTGRES_URL as run.ts;
 * BENCH_AUDIT_PROTOTYPE=on adds the prototype's rounds)
 */
import { randomUUID } from 'node:crypto'
import { loadavg } from 'node:os'
import { sql } from 'kysely'
import { createPlinth } from '../../src/app/create-plinth.ts'
import { loadConfig } from '../../src/config/load-config.ts'
import { auditDiff } from '../../src/core/audit.ts'
import { insertAuditEntry } from '../../src/modules/audit/audit-rows.ts'
import { createLogger, logDestination } from '../../src/observability/logger.ts'
import { processCpuMs, runBenchmark } from '../lib/children.ts'
import { parseOptions } from '../lib/options.ts'
import { productionEnv } from '../lib/server-child.ts'
import { ACTION, applyChange, ROWS, scratchDatabase, sharedKeys } from './protocol.ts'
import { insertPrototypeEntry, prepareSealPrototype, startPrototypeSealer } from './seal-prototype.ts'

const WRITERS = 16
const PROTOTYPE = process.env.BENCH_AUDIT_PROTOTYPE === 'on'
const SERVER_URL = process.env.BENCH_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres'
const USAGE = `Usage: node bench/audit/decompose.ts [--duration <seconds>] [--rounds <n>]

  --duration  seconds per run (default 10); --rounds  runs of each kind (default 3)
  BENCH_AUDIT_PROTOTYPE=on  also runs the audit chain prototype of seal-prototype.ts`

async function main(): Promise<number> {
  const { duration, rounds } = parseOptions(process.argv.slice(2), USAGE)
  const scratch = await scratchDatabase(SERVER_URL, 'plinth_bench_decompose')
  console.log(
    `bench/audit/decompose: ${WRITERS} writers, ${duration} s runs, load average ${loadavg()[0]!.toFixed(2)}`,
  )
  try {
    const config = loadConfig({
      env: {
        ...productionEnv('127.0.0.1'),
        ...sharedKeys(),
        DATABASE_URL: scratch.url,
        PLINTH_ROLE: 'api',
        PLINTH_DB_POOL_MAX: String(WRITERS + 2),
      },
      envFile: false,
    })
    const plinth = await createPlinth({ config, logger: createLogger(config, logDestination('/dev/null')) })
    try {
      await plinth.prepare()
      const db = plinth.db.kysely
      const backends = async () => {
        const { rows } = await sql<{ pid: number }>`
          select pid from pg_stat_activity where datname = current_database()`.execute(db)
        return new Map(rows.map((r) => [r.pid, processCpuMs(r.pid) ?? 0]))
      }
      const spent = (a: Map<number, number>, b: Map<number, number>) =>
        [...b].reduce((ms, [pid, now]) => ms + now - (a.get(pid) ?? 0), 0)
      const actor = { type: 'user' as const, id: randomUUID() }
      const run = async (kind: 'plain' | 'audited' | 'insert' | 'proto', seconds: number, quiet = false) => {
        let commits = 0
        const maxId = async () =>
          BigInt(
            (await sql<{ id: string | null }>`select max(id) as id from audit_log`.execute(db)).rows[0]?.id ??
              0,
          )
        const sealer = kind === 'proto' ? startPrototypeSealer(db, await maxId()) : undefined
        const db0 = await backends()
        const cpu0 = process.cpuUsage()
        const t0 = performance.now()
        const deadline = t0 + seconds * 1000
        await Promise.all(
          Array.from({ length: WRITERS }, async () => {
            while (performance.now() < deadline) {
              const id = 1 + Math.floor(Math.random() * ROWS)
              await db.transaction().execute(async (trx) => {
                const { before, after } = await applyChange(trx, kind === 'plain' ? 'plain' : 'audited', id)
                if (kind === 'plain') return
                const entry = {
                  action: ACTION,
                  actor,
                  target: { type: 'bench-item', id: String(id) },
                  outcome: 'success' as const,
                  ip: '203.0.113.7',
                  userAgent: 'bench/audit',
                  requestId: randomUUID(),
                  changes: auditDiff({ value: before }, { value: after }),
                }
                if (kind === 'insert') await insertAuditEntry(trx, entry)
                else if (kind === 'proto') await insertPrototypeEntry(trx, entry)
                else await plinth.context.audit.record(trx, entry)
              })
              commits++
            }
          }),
        )
        const elapsed = (performance.now() - t0) / 1000
        if (kind === 'audited') await plinth.context.audit.seal()
        if (sealer) {
          await sealer.drain()
          await sealer.stop()
        }
        const cpu = process.cpuUsage(cpu0)
        const db1 = await backends()
        const line = `${kind.padEnd(8)} ${String(Math.round(commits / elapsed)).padStart(5)} commits/s  node ${String(Math.round((cpu.user + cpu.system) / commits)).padStart(4)} µs/txn  postgres ${String(Math.round((spent(db0, db1) * 1000) / commits)).padStart(4)} µs/txn`
        if (!quiet) console.log(line)
        if (kind !== 'insert') return
        const c0 = process.cpuUsage()
        const n = await plinth.context.audit.seal()
        const c = process.cpuUsage(c0)
        const sealDb = spent(db1, await backends())
        if (!quiet && n > 0)
          console.log(
            `  then sealing its ${n} rows alone: node ${Math.round((c.user + c.system) / n)} µs/row  postgres ${Math.round((sealDb * 1000) / n)} µs/row`,
          )
      }
      await run('plain', 1, true)
      await run('audited', 1, true)
      for (let r = 0; r < rounds; r++) {
        await run('plain', duration)
        await run('audited', duration)
      }
      // Stops the sweep and the sealing after each record: the insert alone, then the seal alone.
      await plinth.context.audit.close()
      for (let r = 0; r < rounds; r++) await run('insert', duration)
      if (PROTOTYPE) {
        await prepareSealPrototype(db)
        await run('proto', 1, true)
        for (let r = 0; r < rounds; r++) {
          await run('plain', duration)
          await run('proto', duration)
        }
      }
    } finally {
      await plinth.shutdown()
    }
  } finally {
    await scratch.drop()
  }
  return 0
}

await runBenchmark(main, USAGE)
