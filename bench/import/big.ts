/**
 * The 1 GB import (not in CI: minutes of work): generates an NDJSON file of `--mb` megabytes
 * (default 1024, about 8 million rows of bench/import's shape) and the same rows as CSV, then
 *
 * - `copy`: `COPY … FROM '<csv>'`, read by the server itself (the baseline, same run);
 * - `import`: the engine of `plinth import` on the NDJSON, in a child process whose V8 old space is
 *   capped at `--heap-mb` (default 88, what test/import-memory.test.ts allows: about 50 MB is Plinth
 *   booted with every module) — a file ~12× the cap completes only if it is streamed.
 *
 * Prints rows/s of both, their ratio, and the importing process's peak RSS (getrusage) and peak
 * V8 heap (sampled every 100 ms), and a JSON line. Exits 1 when the import did not load every row.
 *
 * Usage: node bench/import/big.ts [--mb <n>] [--heap-mb <n>] [--batch <n>]
 * The server: BENCH_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/postgres); a scratch
 * database is created and dropped, the files are written under the system's temporary directory
 * (about twice `--mb` of free space) and removed.
 */

import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { chmodSync, createWriteStream, mkdtempSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import pg from 'pg'
import { createPlinth } from '../../src/app/create-plinth.ts'
import { builtinModules } from '../../src/app/modules.ts'
import { loadConfig } from '../../src/config/load-config.ts'
import { cliCaller } from '../../src/core/audit.ts'
import { importServicesOf } from '../../src/modules/imports/imports.module.ts'
import { boundedInt } from '../lib/options.ts'
import { num } from '../lib/table.ts'
import { benchModule, item, TABLE_SQL } from './kit.ts'

const USAGE = 'Usage: node bench/import/big.ts [--mb <n>] [--heap-mb <n>] [--batch <n>]'
const SERVER = process.env.BENCH_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres'

// The parent's keys, handed to the importing child (the data keys it finds were made under them).
const MASTER_KEY = process.env.BENCH_IMPORT_MASTER_KEY ?? randomBytes(32).toString('base64')
const SECRET_KEY = process.env.BENCH_IMPORT_SECRET_KEY ?? randomBytes(48).toString('base64')

const configFor = (databaseUrl: string) =>
  Object.freeze({
    ...loadConfig({
      env: {
        PLINTH_ENV: 'production',
        DATABASE_URL: databaseUrl,
        PLINTH_LOG_LEVEL: 'warn',
        PLINTH_MASTER_KEY: MASTER_KEY,
        PLINTH_SECRET_KEY: SECRET_KEY,
        PLINTH_PUBLIC_URL: 'https://bench.example',
        PLINTH_BACKUP_CRON: 'off',
      },
      envFile: false,
    }),
    role: 'api' as const,
  })

/** The child: imports one file under the heap cap and prints its figures as one JSON line. */
async function child(databaseUrl: string, file: string, batch: number | undefined): Promise<void> {
  let peakHeap = 0
  const sample = () => {
    peakHeap = Math.max(peakHeap, process.memoryUsage().heapUsed)
  }
  const sampler = setInterval(sample, 100)
  const plinth = await createPlinth({
    config: configFor(databaseUrl),
    modules: [...builtinModules, benchModule],
  })
  await plinth.prepare()
  sample()
  const bootHeap = process.memoryUsage().heapUsed
  const engine = importServicesOf(plinth.context).files
  let shown = 0
  const started = process.hrtime.bigint()
  const report = await engine.run({
    module: 'bench',
    dataset: benchModule.importables![0]!,
    paths: [file],
    caller: cliCaller(),
    ...(batch ? { batchSize: batch } : {}),
    onProgress: ({ bytesRead, bytesTotal, rows }) => {
      const tenth = Math.floor((10 * bytesRead) / bytesTotal)
      if (tenth > shown) {
        shown = tenth
        const s = Number(process.hrtime.bigint() - started) / 1e9
        process.stderr.write(
          `  ${tenth * 10}%  ${num(rows)} rows  ${num(Math.round(rows / s))} rows/s  heap ${Math.round(process.memoryUsage().heapUsed / 2 ** 20)} MB\n`,
        )
      }
    },
  })
  const seconds = Number(process.hrtime.bigint() - started) / 1e9
  clearInterval(sampler)
  sample()
  await plinth.shutdown()
  const f = report.files[0]!
  console.log(
    JSON.stringify({
      seconds,
      rows: f.rows,
      inserted: f.inserted,
      status: f.status,
      error: f.error,
      peakHeap,
      bootHeap,
      // getrusage's ru_maxrss, in kilobytes on Linux.
      peakRss: process.resourceUsage().maxRSS * 1024,
    }),
  )
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    args: process.argv.slice(2),
    options: {
      mb: { type: 'string' },
      'heap-mb': { type: 'string' },
      batch: { type: 'string' },
      child: { type: 'string' },
      file: { type: 'string' },
      help: { type: 'boolean' },
    },
  })
  if (values.help) {
    console.log(USAGE)
    return 0
  }
  let mb: number
  let heapMb: number
  let batch: number | undefined
  try {
    mb = boundedInt('--mb', values.mb, { default: 1024, min: 1, max: 100_000 })
    heapMb = boundedInt('--heap-mb', values['heap-mb'], { default: 88, min: 32, max: 16_384 })
    batch = values.batch
      ? boundedInt('--batch', values.batch, { default: 5000, min: 1, max: 100_000 })
      : undefined
  } catch (err) {
    console.error(`${(err as Error).message}\n${USAGE}`)
    return 2
  }
  if (values.child) {
    await child(values.child, values.file!, batch)
    return 0
  }

  const dbName = `bench_import_big_${randomBytes(4).toString('hex')}`
  const admin = new pg.Client({ connectionString: SERVER })
  await admin.connect()
  await admin.query(`create database ${dbName}`)
  const url = new URL(SERVER)
  url.pathname = `/${dbName}`
  const dir = mkdtempSync(join(tmpdir(), 'bench-import-big-'))
  chmodSync(dir, 0o755)
  try {
    const ndjson = join(dir, 'items.ndjson')
    const csv = join(dir, 'items.csv')
    const jsonOut = createWriteStream(ndjson)
    const csvOut = createWriteStream(csv)
    const write = async (out: ReturnType<typeof createWriteStream>, text: string) => {
      if (!out.write(text)) await new Promise<void>((resolve) => out.once('drain', () => resolve()))
    }
    let rows = 0
    let bytes = 0
    const t0 = Date.now()
    while (bytes < mb * 2 ** 20) {
      const r = item(rows++)
      const line = `${JSON.stringify(r)}\n`
      bytes += Buffer.byteLength(line)
      await write(jsonOut, line)
      await write(csvOut, `${r.id},"${r.name}",${r.qty},${r.at},${r.flag}\n`)
    }
    for (const out of [jsonOut, csvOut])
      await new Promise<void>((resolve, reject) =>
        out.end((err?: Error | null) => (err ? reject(err) : resolve())),
      )
    chmodSync(csv, 0o644)
    console.log(
      `generated ${num(rows)} rows: NDJSON ${num(Math.round(statSync(ndjson).size / 2 ** 20))} MB, CSV ${num(Math.round(statSync(csv).size / 2 ** 20))} MB (${((Date.now() - t0) / 1000).toFixed(0)} s)`,
    )

    // The schema (migrations) first, then the baseline: COPY of the same rows, read by the server.
    const plinth = await createPlinth({
      config: configFor(url.toString()),
      modules: [...builtinModules, benchModule],
    })
    await plinth.prepare()
    await plinth.shutdown()
    // A client of its own: Plinth's pool has a statement timeout, which a 1 GB COPY outlasts.
    const direct = new pg.Client({ connectionString: url.toString() })
    await direct.connect()
    await direct.query(TABLE_SQL('bench_copy'))
    await direct.query('checkpoint')
    const c0 = process.hrtime.bigint()
    await direct.query(`copy bench_copy from '${csv}' (format csv)`)
    const copySeconds = Number(process.hrtime.bigint() - c0) / 1e9
    await direct.query('drop table bench_copy')
    await direct.query('checkpoint')
    await direct.end()
    console.log(`copy: ${num(Math.round(rows / copySeconds))} rows/s (${copySeconds.toFixed(1)} s)`)

    console.log(`import with --max-old-space-size=${heapMb}:`)
    const out = await new Promise<{ code: number | null; stdout: string }>((resolve, reject) => {
      const p = spawn(
        process.execPath,
        [
          `--max-old-space-size=${heapMb}`,
          process.argv[1]!,
          '--child',
          url.toString(),
          '--file',
          ndjson,
          ...(batch ? ['--batch', String(batch)] : []),
        ],
        {
          stdio: ['ignore', 'pipe', 'inherit'],
          env: { ...process.env, BENCH_IMPORT_MASTER_KEY: MASTER_KEY, BENCH_IMPORT_SECRET_KEY: SECRET_KEY },
        },
      )
      let stdout = ''
      p.stdout.on('data', (d: Buffer) => {
        stdout += String(d)
      })
      p.on('error', reject)
      p.on('exit', (code) => resolve({ code, stdout }))
    })
    const last = out.stdout.trim().split('\n').at(-1) ?? ''
    let r: {
      seconds: number
      rows: number
      inserted: number
      status: string
      error?: string
      peakHeap: number
      bootHeap: number
      peakRss: number
    }
    try {
      r = JSON.parse(last)
    } catch {
      console.error(`the import process exited with ${out.code} and no figures: ${out.stdout}`)
      return 1
    }
    const MB = (n: number) => `${Math.round(n / 2 ** 20)} MB`
    const importRate = r.rows / r.seconds
    console.log(
      `import: ${num(Math.round(importRate))} rows/s (${r.seconds.toFixed(1)} s), ${r.status}${r.error ? `: ${r.error}` : ''}`,
    )
    console.log(
      `ratio import/copy: ${(importRate / (rows / copySeconds)).toFixed(2)};  peak RSS ${MB(r.peakRss)}, peak heap ${MB(r.peakHeap)} (${MB(r.bootHeap)} once booted; cap ${heapMb} MB) for a ${MB(statSync(ndjson).size)} file`,
    )
    console.log(
      JSON.stringify({
        bench: 'import-big',
        mb,
        rows,
        copy: Math.round(rows / copySeconds),
        import: Math.round(importRate),
        ratioCopy: Number((importRate / (rows / copySeconds)).toFixed(3)),
        heapCapMb: heapMb,
        peakRssMb: Math.round(r.peakRss / 2 ** 20),
        peakHeapMb: Math.round(r.peakHeap / 2 ** 20),
        bootHeapMb: Math.round(r.bootHeap / 2 ** 20),
        complete: r.status === 'complete' && r.inserted === rows,
      }),
    )
    return r.status === 'complete' && r.inserted === rows ? 0 : 1
  } finally {
    rmSync(dir, { recursive: true, force: true })
    await admin.query(`drop database if exists ${dbName} with (force)`)
    await admin.end()
  }
}

process.exit(await main())
