/**
 * Import benchmark: rows/s of `plinth import`'s engine (streaming NDJSON, validation, batches of
 * 5,000 rows each committed with its checkpoint, upsert on the key) beside plain loads of the same
 * rows into the same table shape, in the same run, on the PostgreSQL server:
 *
 * - `copy`: `COPY … FROM '<file>' (FORMAT csv)`, read by the server itself (no client transfer: the
 *   fastest load there is, the baseline of the target);
 * - `insert`: multi-row `INSERT … VALUES` of 1,000 rows per statement, from the same NDJSON parsed
 *   in this process (what a hand-written loader does);
 * - `import`: the engine of `plinth import` on the NDJSON file into an empty table;
 * - `re-run`: the same import again (every row unchanged: what an idempotent re-run costs; no
 *   baseline).
 *
 * Rounds alternate copy, insert, import, re-run (`--rounds`, default 3) on emptied tables; the
 * table shows the median. Target: import ≥ 0.5 × copy. Exits 0 whether or not it is met, 1 when
 * the measurement is broken (a row count that does not match), 2 on bad arguments.
 *
 * Usage: node bench/import/run.ts [--rows <n>] [--rounds <n>]   (or BENCH_IMPORT_ROWS=<n>)
 * The server: BENCH_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/postgres); a scratch
 * database is created on it and dropped afterwards. COPY reads the file server-side, so the server
 * must run on this machine (it does in CI and in development).
 */
import { randomBytes } from 'node:crypto'
import { chmodSync, createWriteStream, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { sql } from 'kysely'
import pg from 'pg'
import { createPlinth } from '../../src/app/create-plinth.ts'
import { builtinModules } from '../../src/app/modules.ts'
import { loadConfig } from '../../src/config/load-config.ts'
import { cliCaller } from '../../src/core/audit.ts'
import { importServicesOf } from '../../src/modules/imports/imports.module.ts'
import { boundedInt, ROUNDS } from '../lib/options.ts'
import { num } from '../lib/table.ts'
import { benchModule, item, TABLE_SQL } from './kit.ts'

const USAGE = 'Usage: node bench/import/run.ts [--rows <n>] [--rounds <n>]   (or BENCH_IMPORT_ROWS=<n>)'
const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    rows: { type: 'string' },
    rounds: { type: 'string' },
    duration: { type: 'string' },
    help: { type: 'boolean' },
  },
})
if (values.help) {
  console.log(USAGE)
  process.exit(0)
}
let rows: number
let rounds: number
try {
  rows = boundedInt('--rows', values.rows ?? process.env.BENCH_IMPORT_ROWS, {
    default: 200_000,
    min: 1000,
    max: 20_000_000,
  })
  rounds = boundedInt('--rounds', values.rounds, ROUNDS)
} catch (err) {
  console.error(`${(err as Error).message}\n${USAGE}`)
  process.exit(2)
}

const SERVER = process.env.BENCH_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres'
async function write(path: string, lines: (i: number) => string): Promise<void> {
  const out = createWriteStream(path)
  for (let i = 0; i < rows; i++)
    if (!out.write(`${lines(i)}\n`)) await new Promise<void>((resolve) => out.once('drain', () => resolve()))
  await new Promise<void>((resolve, reject) =>
    out.end((err?: Error | null) => (err ? reject(err) : resolve())),
  )
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

const dbName = `bench_import_${randomBytes(4).toString('hex')}`
const admin = new pg.Client({ connectionString: SERVER })
await admin.connect()
await admin.query(`create database ${dbName}`)
const url = new URL(SERVER)
url.pathname = `/${dbName}`
const dir = mkdtempSync(join(tmpdir(), 'bench-import-'))
chmodSync(dir, 0o755)
let broken = false
try {
  const ndjson = join(dir, 'items.ndjson')
  const csv = join(dir, 'items.csv')
  await write(ndjson, (i) => JSON.stringify(item(i)))
  await write(csv, (i) => {
    const r = item(i)
    return `${r.id},"${r.name}",${r.qty},${r.at},${r.flag}`
  })
  chmodSync(csv, 0o644)
  const config = Object.freeze({
    ...loadConfig({
      env: {
        PLINTH_ENV: 'production',
        DATABASE_URL: url.toString(),
        PLINTH_LOG_LEVEL: 'warn',
        PLINTH_MASTER_KEY: randomBytes(32).toString('base64'),
        PLINTH_SECRET_KEY: randomBytes(48).toString('base64'),
        PLINTH_PUBLIC_URL: 'https://bench.example',
        PLINTH_BACKUP_CRON: 'off',
      },
      envFile: false,
    }),
    role: 'api' as const,
  })
  const plinth = await createPlinth({ config, modules: [...builtinModules, benchModule] })
  await plinth.prepare()
  const db = plinth.db.kysely
  await sql.raw(TABLE_SQL('bench_copy')).execute(db)
  await sql.raw(TABLE_SQL('bench_insert')).execute(db)
  const engine = importServicesOf(plinth.context).files
  const dataset = benchModule.importables![0]!
  const count = async (table: string) =>
    Number((await sql<{ n: string }>`select count(*) as n from ${sql.table(table)}`.execute(db)).rows[0]!.n)
  const timed = async (fn: () => Promise<void>) => {
    const t = process.hrtime.bigint()
    await fn()
    return rows / (Number(process.hrtime.bigint() - t) / 1e9)
  }
  const results: Record<string, number[]> = { copy: [], insert: [], import: [], 're-run': [] }
  for (let r = 0; r < rounds; r++) {
    await sql`truncate bench_copy, bench_insert, bench_import_items`.execute(db)
    await sql`delete from import_checkpoints`.execute(db)
    await sql`checkpoint`.execute(db)
    results.copy!.push(
      await timed(async () => {
        await sql.raw(`copy bench_copy from '${csv}' (format csv)`).execute(db)
      }),
    )
    results.insert!.push(
      await timed(async () => {
        const { createInterface } = await import('node:readline')
        const { createReadStream } = await import('node:fs')
        let batch: ReturnType<typeof item>[] = []
        const flush = async () => {
          if (batch.length === 0) return
          await db
            // biome-ignore lint/suspicious/noExplicitAny: a bench table outside Plinth's types
            .insertInto('bench_insert' as any)
            .values(batch)
            .execute()
          batch = []
        }
        for await (const line of createInterface({ input: createReadStream(ndjson) })) {
          batch.push(JSON.parse(line))
          if (batch.length >= 1000) await flush()
        }
        await flush()
      }),
    )
    for (const kind of ['import', 're-run'] as const) {
      let expected = 0
      results[kind]!.push(
        await timed(async () => {
          const report = await engine.run({
            module: 'bench',
            dataset,
            paths: [ndjson],
            caller: cliCaller(),
            ...(process.env.BENCH_IMPORT_BATCH ? { batchSize: Number(process.env.BENCH_IMPORT_BATCH) } : {}),
          })
          const f = report.files[0]!
          expected = kind === 'import' ? f.inserted : f.unchanged
        }),
      )
      if (expected !== rows) {
        console.error(`${kind}: ${expected} rows where ${rows} were expected`)
        broken = true
      }
    }
    for (const t of ['bench_copy', 'bench_insert', 'bench_import_items'])
      if ((await count(t)) !== rows) {
        console.error(`${t}: ${await count(t)} rows where ${rows} were expected`)
        broken = true
      }
  }
  await plinth.shutdown()
  const m = Object.fromEntries(Object.entries(results).map(([k, v]) => [k, median(v)])) as Record<
    string,
    number
  >
  console.log(`load of ${num(rows)} rows (median of ${rounds} rounds; the machine may be shared and loaded)`)
  console.log('method        rows/s')
  for (const k of ['copy', 'insert', 'import', 're-run'])
    console.log(`${k.padEnd(12)}${num(Math.round(m[k]!)).padStart(10)}`)
  const ratio = m.import! / m.copy!
  console.log(
    `ratio import/copy: ${ratio.toFixed(2)}   target >= 0.5: ${ratio >= 0.5 ? 'met' : 'MISSED'};  import/insert: ${(m.import! / m.insert!).toFixed(2)}`,
  )
  console.log(
    JSON.stringify({
      bench: 'import',
      rows,
      rounds,
      copy: Math.round(m.copy!),
      insert: Math.round(m.insert!),
      import: Math.round(m.import!),
      rerun: Math.round(m['re-run']!),
      ratioCopy: Number(ratio.toFixed(3)),
      ratioInsert: Number((m.import! / m.insert!).toFixed(3)),
      met: ratio >= 0.5,
    }),
  )
} finally {
  rmSync(dir, { recursive: true, force: true })
  await admin.query(`drop database if exists ${dbName} with (force)`)
  await admin.end()
}
process.exit(broken ? 1 : 0)
