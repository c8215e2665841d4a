import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { sql } from 'kysely'
import {
  connectTo,
  createScratchDatabase,
  pgConnection,
  pgDump,
  pgRestore,
} from '../src/modules/backups/pg-dump-engine.ts'
import { isPlinthError } from '../src/shared/errors.ts'
import { skipUnlessPostgres } from './helpers/services.ts'
import { createTestDatabase, type TestDatabase } from './helpers/test-database.ts'

const hasPgDump = (() => {
  try {
    execFileSync('pg_dump', ['--version'])
    return true
  } catch {
    return false
  }
})()

const engineFailed = (tool: string, detail: RegExp) => (err: unknown) => {
  assert.ok(isPlinthError(err), `expected a PlinthError, got ${String(err)}`)
  assert.equal(err.code, 'PLINTH_BACKUP_ENGINE_FAILED')
  assert.match(err.message, new RegExp(`^${tool} failed \\(exit \\d+\\): `))
  assert.match(err.message, detail)
  return true
}

/** A dump held in memory, as the async stream pgRestore reads. */
async function* streamOf(bytes: Buffer): AsyncGenerator<Buffer> {
  yield bytes
}

const collect = async (dump: AsyncIterable<Buffer>) => {
  const chunks: Buffer[] = []
  for await (const c of dump) chunks.push(c)
  return Buffer.concat(chunks)
}

describe('pgConnection', () => {
  it('moves the password out of the URL into PGPASSWORD, decoded', () => {
    const c = pgConnection('postgres://backup:p%40ss%2Fword@db.internal:5432/app?sslmode=require')
    assert.equal(c.dbname, 'postgres://backup@db.internal:5432/app?sslmode=require')
    assert.equal(c.env.PGPASSWORD, 'p@ss/word')
  })

  it('sets no PGPASSWORD for a URL without one', () => {
    const c = pgConnection('postgres://backup@db.internal/app')
    assert.equal(c.dbname, 'postgres://backup@db.internal/app')
    assert.equal(c.env.PGPASSWORD, process.env.PGPASSWORD)
  })
})

describe('pg_dump and pg_restore', {
  skip: (await skipUnlessPostgres()) || (!hasPgDump && 'pg_dump is not installed'),
}, () => {
  let source: TestDatabase
  const binDir = hasPgDump
    ? `${dirname(execFileSync('sh', ['-c', 'command -v pg_dump']).toString().trim())}/`
    : ''

  before(async () => {
    source = await createTestDatabase()
    const db = connectTo(source.url)
    try {
      await sql`create table notes (id int primary key, body text not null)`.execute(db.kysely)
      await sql`insert into notes select g, 'note ' || g from generate_series(1, 50) g`.execute(db.kysely)
    } finally {
      await db.close()
    }
  })
  after(() => source?.drop())

  it('dumps a database and restores it into a scratch database, which drop() removes', async () => {
    // A password in the URL (ignored by the trust-authenticated test server) travels in the environment.
    const withPassword = new URL(source.url)
    withPassword.password = 'not-in-argv'
    const dump = await collect(pgDump(withPassword.toString(), { binDir }))
    assert.equal(dump.subarray(0, 5).toString('latin1'), 'PGDMP', 'a custom-format archive')

    const scratch = await createScratchDatabase(source.url)
    try {
      await pgRestore(scratch.url, streamOf(dump), { binDir })
      // Restoring again with clean drops what the dump holds first.
      await pgRestore(scratch.url, streamOf(dump), { clean: true })
      const db = connectTo(scratch.url)
      try {
        const { rows } = await sql<{ n: number }>`select count(*)::int as n from notes`.execute(db.kysely)
        assert.equal(rows[0]?.n, 50)
      } finally {
        await db.close()
      }
    } finally {
      await scratch.drop()
    }
    const admin = connectTo(source.url)
    try {
      const name = new URL(scratch.url).pathname.slice(1)
      const { rows } = await sql<{
        n: number
      }>`select count(*)::int as n from pg_database where datname = ${name}`.execute(admin.kysely)
      assert.equal(rows[0]?.n, 0, 'the scratch database is gone')
    } finally {
      await admin.close()
    }
  })

  it('fails a restore that cannot apply (without --clean, the tables exist), leaving the target as it was', async () => {
    const dump = await collect(pgDump(source.url))
    // (The message ends with pg_restore's last three stderr lines, which here are the statement it
    // ran rather than its "already exists" error line: left to the backups module's owners.)
    await assert.rejects(pgRestore(source.url, streamOf(dump)), engineFailed('pg_restore', /./))
    const db = connectTo(source.url)
    try {
      const { rows } = await sql<{ n: number }>`select count(*)::int as n from notes`.execute(db.kysely)
      assert.equal(rows[0]?.n, 50, 'one transaction: nothing of the failed restore stays')
    } finally {
      await db.close()
    }
  })

  it('fails with the tool’s own words for a database that does not exist', async () => {
    const missing = new URL(source.url)
    missing.pathname = '/plinth_no_such_database'
    await assert.rejects(collect(pgDump(missing.toString())), engineFailed('pg_dump', /does not exist/))
  })

  it('fails a restore of bytes that are not a dump', async () => {
    const scratch = await createScratchDatabase(source.url)
    try {
      await assert.rejects(
        pgRestore(
          scratch.url,
          streamOf(Buffer.from('this is not a pg_dump archive, just text\n'.repeat(2000))),
        ),
        engineFailed('pg_restore', /input file|archive/),
      )
    } finally {
      await scratch.drop()
    }
  })

  // Both reject for the caller and leave no unhandled rejection (which would end a running Plinth,
  // src/app/lifecycle.ts): the child's 'error' rejects a promise nobody awaits yet.
  it('rejects when the tool is not where PLINTH_BACKUP_PG_BIN says', async () => {
    const empty = mkdtempSync(join(tmpdir(), 'plinth-no-pg-bin-'))
    try {
      await assert.rejects(collect(pgDump(source.url, { binDir: empty })), { code: 'ENOENT' })
    } finally {
      rmSync(empty, { recursive: true, force: true })
    }
  })

  it('stops pg_dump when its signal aborts', async () => {
    const controller = new AbortController()
    controller.abort()
    await assert.rejects(collect(pgDump(source.url, { signal: controller.signal })), { name: 'AbortError' })
  })
})
