/**
 * Backup benchmark: Plinth's backup and restore of a PostgreSQL database beside the raw engine they
 * drive, in the same run, on the same generated database (≥ 500 MB by default).
 *
 * - `raw dump`: `pg_dump -Fc` (its default compression) to a file;
 * - `plinth backup`: `plinth backup create` without the verification — `pg_dump -Fc --compress=0`
 *   in a repeatable-read snapshot with the row counts, zstd, AES-256-GCM in authenticated chunks,
 *   SHA-256, written to a local target, read back and checked, then published;
 * - `raw restore`: `pg_restore` of the raw file into an empty database, with the flags Plinth uses
 *   (`--no-owner --no-acl --single-transaction --exit-on-error`);
 * - `plinth restore`: `plinth backup restore` into another empty database — the archive read once,
 *   authenticated record by record, decrypted, decompressed and fed to the same pg_restore.
 *
 * Rounds alternate raw, plinth (`--rounds`, default 1: each round moves gigabytes); the table shows
 * the median. Goal: plinth ≤ 1.2 × raw for each. Exits 0 whether or not the goal is met, 1 when the
 * measurement is broken (a restore whose row counts do not match), 2 on bad arguments.
 *
 * Usage: node bench/backup/run.ts [--size-mb <n>] [--rounds <n>]
 * BENCH_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/postgres): scratch databases are
 * created on it and dropped afterwards. pg_dump/pg_restore of the server's major version on PATH.
 */
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync, statSync } from 'node:fs'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import pg from 'pg'
import { createPlinth } from '../../src/app/create-plinth.ts'
import { builtinModules } from '../../src/app/modules.ts'
import { loadConfig } from '../../src/config/load-config.ts'
import { createBackupService } from '../../src/modules/backups/backup.service.ts'
import { createLocalTarget } from '../../src/modules/backups/local-target.ts'
import { createLogger } from '../../src/observability/logger.ts'

const { values } = parseArgs({
  options: {
    'size-mb': { type: 'string', default: '512' },
    rounds: { type: 'string', default: '1' },
    help: { type: 'boolean', default: false },
  },
})
if (values.help) {
  console.log('node bench/backup/run.ts [--size-mb 512] [--rounds 1]   (BENCH_POSTGRES_URL)')
  process.exit(0)
}
const SIZE_MB = Number(values['size-mb'])
const ROUNDS = Number(values.rounds)
if (!(SIZE_MB >= 1) || !(ROUNDS >= 1)) {
  console.error('--size-mb and --rounds are positive numbers')
  process.exit(2)
}
const BASE = process.env.BENCH_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres'
const GOAL = 1.2

const urlOf = (name: string) => {
  const u = new URL(BASE)
  u.pathname = `/${name}`
  return u.toString()
}
async function admin(text: string): Promise<void> {
  const c = new pg.Client({ connectionString: BASE })
  await c.connect()
  try {
    await c.query(text)
  } finally {
    await c.end()
  }
}
async function one<T>(url: string, text: string): Promise<T> {
  const c = new pg.Client({ connectionString: url })
  await c.connect()
  try {
    return (await c.query(text)).rows[0] as T
  } finally {
    await c.end()
  }
}
function run(cmd: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] })
    let err = ''
    child.stderr.on('data', (d: Buffer) => {
      err += d.toString()
    })
    child.on('error', reject)
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`${cmd} exit ${code}: ${err}`))))
  })
}
const seconds = async (fn: () => Promise<unknown>) => {
  const t = process.hrtime.bigint()
  await fn()
  return Number(process.hrtime.bigint() - t) / 1e9
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

const tag = randomBytes(4).toString('hex')
const source = `plinth_bench_backup_${tag}`
const scratch: string[] = [source]
const dir = mkdtempSync(join(tmpdir(), 'plinth-bench-backup-'))
let exitCode = 0
const logger = createLogger({ ...loadConfig({ envFile: false }), logLevel: 'warn', logFormat: 'json' })

try {
  await admin(`create database ${source}`)
  const config = Object.freeze({
    ...loadConfig({ envFile: false }),
    databaseUrl: urlOf(source),
    dataDir: dir,
    masterKey: randomBytes(32).toString('base64'),
    role: 'api' as const,
    backupCron: 'off',
    logLevel: 'warn',
  })
  const plinth = await createPlinth({ config, logger, modules: builtinModules })
  await plinth.prepare()
  try {
    // ~240 bytes a row, half of it compressible text; grown until the database reaches the size.
    console.log(`generating a database of >= ${SIZE_MB} MB …`)
    const genSeconds = await seconds(async () => {
      await one(
        urlOf(source),
        `create table bench_rows (id bigint primary key, a text not null, b text not null, at timestamptz not null)`,
      )
      let next = 1
      for (;;) {
        const { mb } = await one<{ mb: number }>(
          urlOf(source),
          `select (pg_database_size(current_database()) / 1048576)::int as mb`,
        )
        if (mb >= SIZE_MB) break
        const rows = Math.max(50_000, Math.min(500_000, Math.ceil(((SIZE_MB - mb) * 1048576) / 260)))
        await one(
          urlOf(source),
          `insert into bench_rows select g, md5(g::text) || md5((g * 7)::text), repeat(md5(random()::text), 4), now() - g * interval '1 second' from generate_series(${next}, ${next + rows - 1}) g`,
        )
        next += rows
      }
      await one(urlOf(source), 'vacuum analyze bench_rows')
    })
    const { mb: dbMb } = await one<{ mb: number }>(
      urlOf(source),
      `select round(pg_database_size(current_database()) / 1048576.0) as mb`,
    )
    console.log(`database: ${dbMb} MB (generated in ${genSeconds.toFixed(0)} s)`)

    const service = createBackupService({
      config,
      logger,
      db: plinth.db,
      keyring: plinth.context.keyring,
      audit: plinth.context.audit,
      target: createLocalTarget(join(dir, 'backups')),
    })
    const knownMigrations = builtinModules.flatMap((m) => Object.keys(m.migrations ?? {}))
    const t = {
      rawDump: [] as number[],
      plinthDump: [] as number[],
      rawRestore: [] as number[],
      plinthRestore: [] as number[],
    }
    let rawBytes = 0
    let archiveBytes = 0
    for (let r = 0; r < ROUNDS; r++) {
      const file = join(dir, `raw-${r}.dump`)
      t.rawDump.push(await seconds(() => run('pg_dump', ['-Fc', '-f', file, `--dbname=${urlOf(source)}`])))
      rawBytes = statSync(file).size
      let id = ''
      t.plinthDump.push(
        await seconds(async () => {
          const b = await service.create()
          id = b.id
          archiveBytes = b.manifest?.parts[0]?.bytes ?? 0
        }),
      )
      const rawTarget = `plinth_bench_restore_raw_${tag}_${r}`
      const plinthTarget = `plinth_bench_restore_plinth_${tag}_${r}`
      scratch.push(rawTarget, plinthTarget)
      await admin(`create database ${rawTarget}`)
      await admin(`create database ${plinthTarget}`)
      t.rawRestore.push(
        await seconds(() =>
          run('pg_restore', [
            '--no-owner',
            '--no-acl',
            '--single-transaction',
            '--exit-on-error',
            `--dbname=${urlOf(rawTarget)}`,
            file,
          ]),
        ),
      )
      let matches = false
      t.plinthRestore.push(
        await seconds(async () => {
          const res = await service.restore(id, {
            databaseUrl: urlOf(plinthTarget),
            force: false,
            knownMigrations,
          })
          matches = res.matches
        }),
      )
      if (!matches) {
        console.error('the Plinth restore does not match its manifest: the measurement is broken')
        exitCode = 1
      }
      const counts = await Promise.all(
        [rawTarget, plinthTarget].map((d) =>
          one<{ n: string }>(urlOf(d), 'select count(*) as n from bench_rows'),
        ),
      )
      if (counts[0]!.n !== counts[1]!.n) {
        console.error(`row counts differ: raw ${counts[0]!.n}, plinth ${counts[1]!.n}`)
        exitCode = 1
      }
      await admin(`drop database ${rawTarget} with (force)`)
      await admin(`drop database ${plinthTarget} with (force)`)
      rmSync(file, { force: true })
      await service.target.remove(`${id}.archive`)
    }
    const m = Object.fromEntries(Object.entries(t).map(([k, v]) => [k, median(v)])) as Record<
      keyof typeof t,
      number
    >
    const dumpRatio = m.plinthDump / m.rawDump
    const restoreRatio = m.plinthRestore / m.rawRestore
    const line = (name: string, s: number, bytes?: number) =>
      `${name.padEnd(16)}${s.toFixed(1).padStart(9)} s${(dbMb / s).toFixed(1).padStart(10)} MB/s${bytes === undefined ? '' : `${(bytes / 1048576).toFixed(0).padStart(9)} MB out`}`
    console.log(
      `\n${'step'.padEnd(16)}${'time'.padStart(11)}${'DB MB/s'.padStart(15)}   (median of ${ROUNDS}; load ${loadavg()
        .map((x) => x.toFixed(1))
        .join(' ')})`,
    )
    console.log(line('raw dump', m.rawDump, rawBytes))
    console.log(line('plinth backup', m.plinthDump, archiveBytes))
    console.log(line('raw restore', m.rawRestore))
    console.log(line('plinth restore', m.plinthRestore))
    const verdict = (x: number) => (x <= GOAL ? 'met' : 'MISSED')
    console.log(`\nbackup  plinth/raw: ${dumpRatio.toFixed(2)}   goal <= ${GOAL}: ${verdict(dumpRatio)}`)
    console.log(`restore plinth/raw: ${restoreRatio.toFixed(2)}   goal <= ${GOAL}: ${verdict(restoreRatio)}`)
    console.log(
      JSON.stringify({
        bench: 'backup',
        databaseMb: Number(dbMb),
        rounds: ROUNDS,
        seconds: m,
        rawDumpBytes: rawBytes,
        archiveBytes,
        backupRatio: Number(dumpRatio.toFixed(3)),
        restoreRatio: Number(restoreRatio.toFixed(3)),
        goal: GOAL,
        loadavg: loadavg(),
      }),
    )
  } finally {
    await plinth.shutdown()
  }
} catch (err) {
  console.error(err)
  exitCode = 1
} finally {
  for (const d of scratch) await admin(`drop database if exists ${d} with (force)`).catch(() => {})
  rmSync(dir, { recursive: true, force: true })
}
process.exit(exitCode)
