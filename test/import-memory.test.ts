/**
 * A file far larger than the heap the import may use: it completes, so it was streamed. The size
 * is PLINTH_IMPORT_TEST_MB (default 100 MB, 1.5 times the heap cap, in CI); the issue's 1 GB is
 * PLINTH_IMPORT_TEST_MB=1024 (about 7 million rows: too slow for CI on a shared machine).
 */
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { createWriteStream, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { sql } from 'kysely'
import type { ImportReport } from '../src/core/import.ts'
import { catalogModule, machine } from './helpers/import-kit.ts'
import { skipUnlessPostgres } from './helpers/services.ts'
import { TEST_MASTER_KEY } from './helpers/test-config.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'

const MB = Number(process.env.PLINTH_IMPORT_TEST_MB ?? 100)
/**
 * The old-space cap of the importing process: below the file's size, and far below what its rows
 * take parsed (about three times the file). A Plinth with every built-in module boots in about
 * 50 MB of heap, so the cap leaves the import itself some 40 MB.
 */
const HEAP_MB = 88

describe(`plinth import of a ${MB} MB NDJSON file with a ${HEAP_MB} MB heap`, {
  skip: await skipUnlessPostgres(),
}, () => {
  let plinth: TestPlinth
  let dir: string
  let path: string
  let rows = 0

  before(async () => {
    plinth = await startTestPlinth({
      backend: 'postgres',
      modules: [catalogModule],
      env: { PLINTH_MASTER_KEY: TEST_MASTER_KEY },
    })
    dir = mkdtempSync(join(tmpdir(), 'plinth-import-big-'))
    path = join(dir, 'machines.ndjson')
    const out = createWriteStream(path)
    let bytes = 0
    while (bytes < MB * 1024 * 1024) {
      const line = `${JSON.stringify(machine(rows, { serial: `BIG-${String(rows).padStart(9, '0')}`, name: `press ${rows} of the long hall, line ${rows % 97}` }))}\n`
      bytes += line.length
      rows++
      if (!out.write(line)) await new Promise<void>((resolve) => out.once('drain', () => resolve()))
    }
    await new Promise<void>((resolve, reject) =>
      out.end((err?: Error | null) => (err ? reject(err) : resolve())),
    )
  })
  after(async () => {
    await plinth?.close()
    if (dir) rmSync(dir, { recursive: true, force: true })
  })

  it('completes every row: the file was streamed, never held', { timeout: 30 * 60_000 }, async () => {
    assert.ok(statSync(path).size > 1.1 * HEAP_MB * 1024 * 1024)
    const env = {
      PATH: process.env.PATH ?? '',
      PLINTH_ENV: 'test',
      PLINTH_LOG_LEVEL: 'warn',
      PLINTH_MASTER_KEY: TEST_MASTER_KEY,
      DATABASE_URL: plinth.config.databaseUrl!,
    }
    const child = spawn(
      process.execPath,
      [
        `--max-old-space-size=${HEAP_MB}`,
        'test/fixtures/import-cli.ts',
        'import',
        'catalog',
        'machines',
        path,
        '--json',
      ],
      { env, stdio: ['ignore', 'pipe', 'pipe'] },
    )
    let out = ''
    let err = ''
    let peakRss = 0
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (err += d))
    // The resident set, sampled: reported, not asserted (it includes Node's own code and buffers).
    const sampler = setInterval(() => {
      try {
        const kb = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))?.[1] ?? 0)
        peakRss = Math.max(peakRss, kb)
      } catch {
        // exited
      }
    }, 250)
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve))
    clearInterval(sampler)
    assert.equal(code, 0, err.slice(-2000))
    const report = JSON.parse(out) as ImportReport
    assert.equal(report.files[0]!.inserted, rows)
    const n = await sql<{ n: string }>`select count(*) as n from catalog_machines`.execute(plinth.db.kysely)
    assert.equal(Number(n.rows[0]!.n), rows)
    console.log(`# ${rows} rows, ${MB} MB, heap cap ${HEAP_MB} MB, peak RSS ${Math.round(peakRss / 1024)} MB`)
  })
})
