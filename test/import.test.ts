import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { sql } from 'kysely'
import { useApplicationModules } from '../src/app/create-plinth.ts'
import { cliCaller } from '../src/core/audit.ts'
import type { ImportReport } from '../src/core/import.ts'
import { importServicesOf } from '../src/modules/imports/imports.module.ts'
import { catalogModule, machine } from './helpers/import-kit.ts'
import { runCliWithEnv } from './helpers/run-cli.ts'
import { skipUnlessPostgres } from './helpers/services.ts'
import { spawnCli } from './helpers/spawn-cli.ts'
import { TEST_MASTER_KEY } from './helpers/test-config.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'
import { waitFor } from './helpers/wait-for.ts'

const skip = await skipUnlessPostgres()

describe('plinth import <module> <dataset> <file|dir>, on PostgreSQL', { skip }, () => {
  let plinth: TestPlinth
  let env: Record<string, string>
  let dir: string
  let n = 0

  before(async () => {
    plinth = await startTestPlinth({
      backend: 'postgres',
      modules: [catalogModule],
      env: { PLINTH_MASTER_KEY: TEST_MASTER_KEY },
    })
    env = {
      PLINTH_ENV: 'test',
      PLINTH_LOG_LEVEL: 'silent',
      PLINTH_MASTER_KEY: TEST_MASTER_KEY,
      DATABASE_URL: plinth.config.databaseUrl!,
    }
    dir = mkdtempSync(join(tmpdir(), 'plinth-import-'))
    useApplicationModules([catalogModule])
  })
  after(async () => {
    useApplicationModules([])
    await plinth?.close()
    if (dir) rmSync(dir, { recursive: true, force: true })
  })

  const db = () => plinth.db.kysely
  const file = (name: string, content: string | Buffer) => {
    const sub = join(dir, `case-${++n}`)
    rmSync(sub, { recursive: true, force: true })
    require_mkdir(sub)
    const path = join(sub, name)
    writeFileSync(path, content)
    return path
  }
  const ndjson = (rows: readonly object[]) => `${rows.map((r) => JSON.stringify(r)).join('\n')}\n`
  const run = async (...args: string[]) => {
    const r = await runCliWithEnv(['import', 'catalog', 'machines', ...args, '--json'], env)
    let report: ImportReport | undefined
    try {
      report = JSON.parse(r.out) as ImportReport
    } catch {
      // not JSON: the command failed before reporting (r.err says why)
    }
    return { ...r, report }
  }
  const snapshot = async (prefix: string) =>
    (
      await sql<
        Record<string, unknown>
      >`select serial, name, capacity, installed_at, active, xmin::text as xmin
        from catalog_machines where serial like ${`${prefix}%`} order by serial`.execute(db())
    ).rows
  const counts = (r: ImportReport, i = 0) => {
    const f = r.files[i]!
    return {
      rows: f.rows,
      inserted: f.inserted,
      updated: f.updated,
      unchanged: f.unchanged,
      rejected: f.rejected,
    }
  }

  it('is idempotent: a second run changes nothing (no row rewritten), a changed row is the only one updated', async () => {
    const rows = Array.from({ length: 2500 }, (_, i) =>
      machine(i, { serial: `ID-${String(i).padStart(6, '0')}` }),
    )
    const path = file('machines.ndjson', ndjson(rows))
    const first = await run(path)
    assert.equal(first.code, 0, first.err)
    assert.deepEqual(counts(first.report!), {
      rows: 2500,
      inserted: 2500,
      updated: 0,
      unchanged: 0,
      rejected: 0,
    })
    const before = await snapshot('ID-')
    assert.equal(before.length, 2500)

    const second = await run(path)
    assert.equal(second.code, 0, second.err)
    assert.deepEqual(counts(second.report!), {
      rows: 2500,
      inserted: 0,
      updated: 0,
      unchanged: 2500,
      rejected: 0,
    })
    // Same rows, same versions: nothing was rewritten (xmin unchanged).
    assert.deepEqual(await snapshot('ID-'), before)

    rows[7] = { ...rows[7]!, name: 'renamed' }
    writeFileSync(path, ndjson(rows))
    const third = await run(path)
    assert.deepEqual(counts(third.report!), {
      rows: 2500,
      inserted: 0,
      updated: 1,
      unchanged: 2499,
      rejected: 0,
    })
    const afterThird = await snapshot('ID-')
    assert.equal(afterThird.filter((r, i) => r.xmin !== before[i]!.xmin).length, 1)
    assert.equal(afterThird[7]!.name, 'renamed')
  })

  it('loads the same rows from JSON, NDJSON and CSV (a directory), mapping CSV headers and coercing CSV text', async () => {
    const sub = join(dir, 'formats')
    require_mkdir(sub)
    const rows = Array.from({ length: 30 }, (_, i) => machine(i, { serial: `FMT-${i}` }))
    writeFileSync(join(sub, 'a.json'), JSON.stringify(rows.slice(0, 10), null, 2))
    writeFileSync(join(sub, 'b.ndjson'), ndjson(rows.slice(10, 20)))
    const csvRows = rows
      .slice(20)
      .map((r) => `${r.serial},"${r.name}, the ""big"" one",${r.capacity},${r.installed_at},${r.active}`)
    writeFileSync(
      join(sub, 'c.csv'),
      `\ufeffSerial No,name,capacity,installed_at,active\r\n${csvRows.join('\r\n')}\r\n`,
    )
    const r = await run(sub)
    assert.equal(r.code, 0, r.err)
    assert.deepEqual(
      r.report!.files.map((f) => [f.format, f.inserted]),
      [
        ['json', 10],
        ['ndjson', 10],
        ['csv', 10],
      ],
    )
    const got = await snapshot('FMT-')
    assert.equal(got.length, 30)
    const c = got.find((g) => g.serial === 'FMT-25')!
    assert.equal(c.name, 'press 25, the "big" one')
    assert.equal(c.capacity, 25)
    assert.equal(c.active, false)
    assert.equal((c.installed_at as Date).toISOString(), machine(25).installed_at)
  })

  it('--dry-run reports exactly what the real run then does, and changes nothing', async () => {
    await run(
      file('seed.ndjson', ndjson(Array.from({ length: 50 }, (_, i) => machine(i, { serial: `DRY-${i}` })))),
    )
    const rows: object[] = Array.from({ length: 120 }, (_, i) =>
      machine(i, { serial: `DRY-${i}`, ...(i % 10 === 0 ? { name: `changed ${i}` } : {}) }),
    )
    rows.push(machine(3, { serial: 'DRY-3' })) // a duplicate key
    rows.push({ serial: 'DRY-bad', name: 'x', capacity: 'lots', active: true }) // a wrong type
    rows.push(machine(999, { serial: 'DRY-huge', capacity: 2_000_000 })) // refused by the database's check
    const path = file('dry.ndjson', ndjson(rows))
    const before = await snapshot('DRY-')
    const dry = await run(path, '--dry-run', '--batch-size', '16')
    assert.equal(dry.code, 1, 'rows are rejected: not complete')
    assert.deepEqual(await snapshot('DRY-'), before, 'the dry run changed nothing')
    const real = await run(path, '--batch-size', '16')
    assert.equal(real.code, 1)
    assert.deepEqual({ ...dry.report!, dryRun: false }, real.report!)
    assert.deepEqual(counts(real.report!), {
      rows: 123,
      inserted: 70,
      updated: 5,
      unchanged: 45,
      rejected: 3,
    })
    assert.deepEqual(
      real.report!.files[0]!.rejections.map((r) => r.line),
      [121, 122, 123],
    )
    assert.match(real.report!.files[0]!.rejections[0]!.reason, /duplicate key: the same key as line 4/)
    assert.match(real.report!.files[0]!.rejections[1]!.reason, /field "capacity" must be integer/)
    assert.match(real.report!.files[0]!.rejections[2]!.reason, /refused by the database: .*check constraint/)
  })

  describe('bad input: clear per-row or per-file errors, exit 1, nothing half-applied', () => {
    const good = (i: number) => JSON.stringify(machine(i, { serial: `BAD-${n}-${i}` }))
    const rowCases: [string, string, string | Buffer, number, RegExp][] = [
      [
        'malformed JSON line',
        'x.ndjson',
        `${good(1)}\n{"serial": "BAD-x",\n${good(2)}\n`,
        2,
        /malformed JSON/,
      ],
      [
        'invalid UTF-8 in a line',
        'x.ndjson',
        Buffer.concat([
          Buffer.from(`${good(1)}\n{"serial":"BAD-u","name":"`),
          Buffer.from([0xc3, 0x28]),
          Buffer.from(`","capacity":1,"active":true}\n${good(2)}\n`),
        ]),
        2,
        /invalid UTF-8/,
      ],
      [
        'a field of the wrong type',
        'x.ndjson',
        `${good(1)}\n{"serial":"BAD-t","name":"a","capacity":"7","active":true}\n`,
        2,
        /field "capacity" must be integer/,
      ],
      [
        'an unknown field',
        'x.ndjson',
        `{"serial":"BAD-f","name":"a","capacity":1,"active":true,"colour":"red"}\n${good(2)}\n`,
        1,
        /field "colour" is not allowed/,
      ],
      [
        'a missing required field',
        'x.ndjson',
        `${good(1)}\n{"serial":"BAD-m","capacity":1,"active":true}\n`,
        2,
        /field "name" must have required property/,
      ],
      ['not an object', 'x.ndjson', `${good(1)}\n[1,2]\n`, 2, /not a JSON object \(an array\)/],
      [
        'a JSON array element that is not an object',
        'x.json',
        `[${good(1)},\n 42]`,
        2,
        /not a JSON object \(number\)/,
      ],
      [
        'a CSV row with too many fields',
        'x.csv',
        'Serial No,name,capacity,active\nBAD-c1,a,1,true\nBAD-c2,b,2,true,extra\n',
        3,
        /has 5 fields where the header has 4/,
      ],
      [
        'a CSV row with a stray quote',
        'x.csv',
        'Serial No,name,capacity,active\nBAD-q1,a,1,true\nBAD-q2,"b"x,2,true\n',
        3,
        /malformed CSV/,
      ],
      [
        'invalid UTF-8 in a CSV row',
        'x.csv',
        Buffer.concat([
          Buffer.from('Serial No,name,capacity,active\nBAD-e1,a,1,true\nBAD-e2,'),
          Buffer.from([0xff, 0xfe]),
          Buffer.from(',2,true\n'),
        ]),
        3,
        /invalid UTF-8/,
      ],
      [
        'a CSV value of the wrong type',
        'x.csv',
        'Serial No,name,capacity,active\nBAD-v1,a,1,true\nBAD-v2,b,two,true\n',
        3,
        /field "capacity" must be integer/,
      ],
    ]
    for (const [what, name, content, line, reason] of rowCases)
      it(`${what}: that row is rejected with its line, the others are applied`, async () => {
        const r = await run(file(name, content))
        assert.equal(r.code, 1, r.err)
        const f = r.report!.files[0]!
        assert.equal(f.status, 'complete')
        assert.equal(f.rejected, 1, JSON.stringify(f.rejections))
        assert.equal(f.rejections[0]!.line, line)
        assert.match(f.rejections[0]!.reason, reason)
        assert.equal(f.inserted + f.unchanged, f.rows - 1)
      })

    const fileCases: [string, string, string | Buffer, RegExp][] = [
      [
        'NDJSON named .json',
        'x.json',
        `${good(1)}\n${good(2)}\n`,
        /is not a JSON array \(it starts with an object: .*NDJSON/,
      ],
      ['a JSON array named .ndjson', 'x.ndjson', `[${good(1)}]`, /is not NDJSON \(it starts with an array/],
      ['JSON named .csv', 'x.csv', `[${good(1)}]`, /looks like JSON, not CSV/],
      ['a binary file', 'x.csv', Buffer.from([0x50, 0x4b, 0x03, 0x04, 0, 0, 0, 1]), /binary data/],
      ['a gzip file', 'x.ndjson', Buffer.from([0x1f, 0x8b, 8, 0, 0, 0]), /gzip-compressed/],
      [
        'a CSV with a different header',
        'x.csv',
        'serial_number,name,capacity,active\nBAD-h,a,1,true\n',
        /CSV header does not match.*missing: serial.*unknown: serial_number/,
      ],
      [
        'a truncated JSON array',
        'x.json',
        `[${good(1)},\n${good(2)}`,
        /ends before the JSON array is closed/,
      ],
      ['an unknown extension', 'x.xml', '<machines/>', /not an importable file/],
    ]
    for (const [what, name, content, message] of fileCases)
      it(`${what}: a per-file error, exit 1`, async () => {
        const r = await run(file(name, content))
        assert.equal(r.code, 1, r.err)
        const f = r.report!.files[0]!
        assert.equal(f.status, 'failed')
        assert.match(f.error!, message)
      })

    it('a CSV with a different header applies nothing', async () => {
      const r = await run(file('h.csv', 'Serial No,title,capacity,active\nHDR-1,a,1,true\n'))
      assert.equal(r.code, 1)
      assert.equal((await snapshot('HDR-')).length, 0)
    })

    it('an unknown module or dataset, and a missing file, are refused with their code', async () => {
      let r = await runCliWithEnv(['import', 'catalog', 'gadgets', join(dir, 'none.ndjson')], env)
      assert.equal(r.code, 1)
      assert.match(r.err, /PLINTH_IMPORT_UNKNOWN_DATASET/)
      assert.match(r.err, /known: catalog machines/)
      r = await runCliWithEnv(['import', 'catalog', 'machines', join(dir, 'none.ndjson')], env)
      assert.equal(r.code, 1)
      assert.match(r.err, /no such file or directory \[PLINTH_IMPORT_BAD_FILE\]/)
      r = await runCliWithEnv(['import', 'catalog', 'machines'], env)
      assert.equal(r.code, 2)
    })
  })

  it('each run is one audit row', async () => {
    const rows = await db()
      .selectFrom('audit_log')
      .select(['action', 'target_id', 'outcome', 'details'])
      .where('action', 'like', 'import:%')
      .execute()
    assert.ok(rows.some((r) => r.action === 'import:completed' && r.target_id === 'catalog/machines'))
    assert.ok(rows.some((r) => r.action === 'import:dry-run'))
    assert.ok(rows.some((r) => r.action === 'import:incomplete' && r.outcome === 'failure'))
  })

  it('resumes after a kill -9 in the middle: the batches committed stay, the rest is read once', async () => {
    const total = 120_000
    const path = file('big.ndjson', '')
    const lines: string[] = []
    for (let i = 0; i < total; i++)
      lines.push(JSON.stringify(machine(i, { serial: `KILL-${String(i).padStart(7, '0')}` })))
    writeFileSync(path, `${lines.join('\n')}\n`)
    const child = spawn(
      process.execPath,
      ['test/fixtures/import-cli.ts', 'import', 'catalog', 'machines', path, '--batch-size', '500', '--json'],
      { env: { PATH: process.env.PATH ?? '', ...env }, stdio: 'ignore' },
    )
    const exited = new Promise((resolve) => child.on('exit', resolve))
    try {
      await waitFor(
        'the first checkpoints',
        async () => {
          const cp = await db()
            .selectFrom('import_checkpoints')
            .select('rows')
            .where('file', '=', path)
            .executeTakeFirst()
          return cp && Number(cp.rows) >= 2000
        },
        { timeoutMs: 90_000, intervalMs: 20 },
      )
    } finally {
      child.kill('SIGKILL')
      await exited
    }
    const cp = await db()
      .selectFrom('import_checkpoints')
      .selectAll()
      .where('file', '=', path)
      .executeTakeFirstOrThrow()
    assert.equal(cp.status, 'running', 'killed before the end')
    assert.ok(Number(cp.rows) < total, `killed in the middle (${cp.rows} rows)`)
    // Exactly what the checkpoint says committed is in the table: no half batch.
    const inTable = async () =>
      Number(
        (
          await sql<{
            n: string
          }>`select count(*) as n from catalog_machines where serial like 'KILL-%'`.execute(db())
        ).rows[0]!.n,
      )
    assert.equal(await inTable(), Number(cp.inserted))

    const again = await spawnCli(
      ['import', 'catalog', 'machines', path, '--batch-size', '500', '--json'],
      env,
      {
        entry: 'test/fixtures/import-cli.ts',
      },
    )
    assert.equal(again.code, 0, again.err)
    const report = JSON.parse(again.out) as ImportReport
    const f = report.files[0]!
    assert.equal(f.resumedAtLine, Number(cp.line))
    assert.deepEqual(counts(report), { rows: total, inserted: total, updated: 0, unchanged: 0, rejected: 0 })
    assert.equal(await inTable(), total)
  })

  it('starts the file again when its seen keys are gone (unlogged: emptied by a database crash), so no duplicate slips through', async () => {
    const persistence = await sql<{
      relpersistence: string
    }>`select relpersistence from pg_class where relname = 'import_seen_keys'`.execute(db())
    assert.equal(persistence.rows[0]!.relpersistence, 'u')
    const total = 60_000
    const path = file('lost.ndjson', '')
    const lines: string[] = []
    for (let i = 0; i < total; i++)
      lines.push(JSON.stringify(machine(i, { serial: `LOST-${String(i).padStart(7, '0')}` })))
    // The last line repeats the first one's key, with other values: a duplicate across the kill.
    lines.push(JSON.stringify(machine(total, { serial: 'LOST-0000000', name: 'the impostor' })))
    writeFileSync(path, `${lines.join('\n')}\n`)
    const child = spawn(
      process.execPath,
      ['test/fixtures/import-cli.ts', 'import', 'catalog', 'machines', path, '--batch-size', '500', '--json'],
      { env: { PATH: process.env.PATH ?? '', ...env }, stdio: 'ignore' },
    )
    const exited = new Promise((resolve) => child.on('exit', resolve))
    try {
      await waitFor(
        'the first checkpoints',
        async () => {
          const cp = await db()
            .selectFrom('import_checkpoints')
            .select('rows')
            .where('file', '=', path)
            .executeTakeFirst()
          return cp && Number(cp.rows) >= 2000
        },
        { timeoutMs: 90_000, intervalMs: 20 },
      )
    } finally {
      child.kill('SIGKILL')
      await exited
    }
    const cp = await db()
      .selectFrom('import_checkpoints')
      .selectAll()
      .where('file', '=', path)
      .executeTakeFirstOrThrow()
    assert.equal(cp.status, 'running', 'killed before the end')
    assert.equal(Number(cp.seen_keys), Number(cp.inserted), 'each committed batch counted its keys')
    // What PostgreSQL's crash recovery does to an unlogged table.
    await sql`truncate import_seen_keys`.execute(db())

    const again = await spawnCli(
      ['import', 'catalog', 'machines', path, '--batch-size', '500', '--json'],
      env,
      { entry: 'test/fixtures/import-cli.ts' },
    )
    assert.equal(again.code, 1, 'a rejected row: exit 1')
    const f = (JSON.parse(again.out) as ImportReport).files[0]!
    assert.equal(f.resumedAtLine, 0, 'started again, not resumed blind')
    assert.deepEqual(counts(JSON.parse(again.out) as ImportReport), {
      rows: total + 1,
      inserted: total - Number(cp.inserted),
      updated: 0,
      unchanged: Number(cp.inserted),
      rejected: 1,
    })
    assert.equal(f.rejections[0]!.line, total + 1)
    assert.match(f.rejections[0]!.reason, /duplicate key: the same key as line 1\b/)
    const first = await sql<{
      name: string
    }>`select name from catalog_machines where serial = 'LOST-0000000'`.execute(db())
    assert.notEqual(first.rows[0]!.name, 'the impostor')
  })
})

function require_mkdir(path: string) {
  mkdirSync(path, { recursive: true })
}

describe('the import engine on the embedded database (PGlite)', () => {
  let plinth: TestPlinth
  let dir: string
  before(async () => {
    plinth = await startTestPlinth({ modules: [catalogModule] })
    dir = mkdtempSync(join(tmpdir(), 'plinth-import-embedded-'))
  })
  after(async () => {
    await plinth?.close()
    if (dir) rmSync(dir, { recursive: true, force: true })
  })

  it('imports, re-runs without changes, and dry-runs to the same report', async () => {
    const engine = importServicesOf(plinth.context).files
    const dataset = catalogModule.importables![0]!
    const path = join(dir, 'm.csv')
    const rows = Array.from({ length: 40 }, (_, i) => machine(i, { serial: `EMB-${i}` }))
    writeFileSync(
      path,
      `Serial No,name,capacity,active\n${rows.map((r) => `${r.serial},${r.name},${r.capacity},${r.active}`).join('\n')}\nEMB-1,dup,1,true\n`,
    )
    const run = (dryRun: boolean) =>
      engine.run({ module: 'catalog', dataset, paths: [path], dryRun, batchSize: 7, caller: cliCaller() })
    const dry = await run(true)
    const real = await run(false)
    assert.deepEqual({ ...dry, dryRun: false }, real)
    assert.equal(real.files[0]!.inserted, 40)
    assert.deepEqual(real.files[0]!.rejections, [
      { line: 42, reason: 'duplicate key: the same key as line 3' },
    ])
    const again = await run(false)
    assert.equal(again.files[0]!.unchanged, 40)
    assert.equal(again.files[0]!.inserted + again.files[0]!.updated, 0)
  })
})
