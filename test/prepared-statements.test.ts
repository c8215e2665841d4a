import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { CompiledQuery, sql } from 'kysely'
import pg from 'pg'
import { createDatabase, type Database, IN_MEMORY } from '../src/infra/db/create-db.ts'
import { preparedName, preparedStatement, REGISTRY_LIMIT } from '../src/infra/db/prepared-statements.ts'
import { createLogger } from '../src/observability/logger.ts'
import { skipUnlessPostgres } from './helpers/services.ts'
import { createTestDatabase, type TestDatabase } from './helpers/test-database.ts'

const silent = createLogger({ env: 'test', logLevel: 'silent', logFormat: 'json' })
const dbConfig = (databaseUrl: string | undefined) => ({
  databaseUrl,
  dataDir: IN_MEMORY,
  dbPoolMax: 4,
  dbConnectTimeout: 5000,
  dbStatementTimeout: 0,
  dbQueryTimeout: 10_000,
  dbIdleTimeout: 10_000,
  dbConnectDeadline: 10_000,
})

const INSERT = preparedStatement('insert into prep_things (id, v) values ($1, $2)')
const UPDATE = preparedStatement('update prep_things set v = v + $2 where id = $1')

/** The named statements the connection running `fn` holds, after `fn`. */
async function onOneConnection<T>(
  db: Database,
  fn: (run: (text: string, values: unknown[]) => Promise<unknown>) => Promise<T>,
) {
  return db.kysely.connection().execute(async (conn) => {
    const out = await fn((text, values) => conn.executeQuery(CompiledQuery.raw(text, values)))
    const { rows } = await sql<{
      name: string
    }>`select name from pg_prepared_statements order by name`.execute(conn)
    return { out, prepared: rows.map((r) => r.name) }
  })
}

describe('prepared statements: the registry', () => {
  it('accepts only writes that return no rows, names a text once and by its content', () => {
    assert.equal(preparedStatement(INSERT), INSERT)
    assert.match(preparedName(INSERT)!, /^plinth_[0-9a-f]{24}$/)
    assert.notEqual(preparedName(INSERT), preparedName(UPDATE))
    assert.equal(preparedName('insert into prep_things (id, v) values ($1, $3)'), undefined)
    for (const text of [
      'select * from prep_things where id = $1',
      'with x as (select 1) insert into prep_things select 1, 2',
      'insert into prep_things (id, v) values ($1, $2) returning *',
      'delete from prep_things where id = $1 RETURNING id',
    ])
      assert.throws(() => preparedStatement(text), TypeError, text)
  })

  it('holds at most REGISTRY_LIMIT texts', () => {
    assert.throws(() => {
      for (let i = 0; i <= REGISTRY_LIMIT; i++)
        preparedStatement(`delete from prep_things where id = ${i} and v = $1`)
    }, /at most 32/)
  })
})

describe('prepared statements on postgres', { skip: await skipUnlessPostgres() }, () => {
  let scratch: TestDatabase
  let db: Database

  before(async () => {
    scratch = await createTestDatabase()
    db = await createDatabase(dbConfig(scratch.url), { logger: silent })
    await db.connect()
    await sql`create table prep_things (id integer primary key, v integer not null)`.execute(db.kysely)
  })
  after(async () => {
    await db?.close()
    await scratch?.drop()
  })

  it('sends a registered statement named, parsed once per connection; other statements stay unnamed', async () => {
    const { prepared } = await onOneConnection(db, async (run) => {
      for (let i = 1; i <= 5; i++) await run(INSERT, [i, 0])
      for (let i = 1; i <= 5; i++) await run(UPDATE, [i, 10])
      await run('update prep_things set v = v where id = $1', [1])
    })
    assert.deepEqual(prepared, [preparedName(INSERT), preparedName(UPDATE)].sort())
    const { rows } = await sql<{ n: number; total: number }>`
      select count(*)::int as n, sum(v)::int as total from prep_things`.execute(db.kysely)
    assert.deepEqual(rows[0], { n: 5, total: 50 })
  })

  it('works again on a new connection after its connection was reset', async () => {
    const { prepared: before } = await onOneConnection(db, (run) => run(INSERT, [100, 1]))
    assert.ok(before.includes(preparedName(INSERT)!))
    // Reset every connection of the pool under it.
    await sql`select pg_terminate_backend(pid) from pg_stat_activity
      where datname = current_database() and pid <> pg_backend_pid()`.execute(db.kysely)
    // Broken clients are discarded as they fail; within a few tries every statement runs on fresh ones.
    let ok = 0
    for (let i = 0; i < 20 && ok < 8; i++) {
      try {
        await db.kysely.executeQuery(CompiledQuery.raw(UPDATE, [100, 1]))
        ok++
      } catch (err) {
        assert.match((err as Error).message, /terminat|Connection|ended|closed/i)
      }
    }
    assert.equal(ok, 8)
    const { prepared } = await onOneConnection(db, async (run) => run(UPDATE, [100, 1]))
    assert.ok(prepared.includes(preparedName(UPDATE)!))
    const { rows } = await sql<{ v: number }>`select v from prep_things where id = 100`.execute(db.kysely)
    assert.equal(rows[0]!.v, 10)
  })

  it('keeps working across a migration on every connection that prepared it (no stale plan)', async () => {
    // Every pooled connection prepares both statements first.
    await Promise.all(
      Array.from({ length: 4 }, (_, k) =>
        db.kysely.transaction().execute(async (trx) => {
          await trx.executeQuery(CompiledQuery.raw(INSERT, [200 + k, 1]))
          await trx.executeQuery(CompiledQuery.raw(UPDATE, [200 + k, 1]))
        }),
      ),
    )
    const migrate = new pg.Client({ connectionString: scratch.url })
    await migrate.connect()
    try {
      // A column's type changes, a column is added in front of the defaults, an index appears.
      await migrate.query('alter table prep_things alter column v type bigint')
      await migrate.query(`alter table prep_things add column note text not null default 'n'`)
      await migrate.query('create index prep_things_v on prep_things (v)')
    } finally {
      await migrate.end()
    }
    await Promise.all(
      Array.from({ length: 4 }, (_, k) =>
        db.kysely.transaction().execute(async (trx) => {
          await trx.executeQuery(CompiledQuery.raw(INSERT, [300 + k, 2]))
          await trx.executeQuery(CompiledQuery.raw(UPDATE, [200 + k, 1]))
        }),
      ),
    )
    // The table dropped and created again (a migration down and up): re-planned against the new one.
    await sql`drop table prep_things`.execute(db.kysely)
    await sql`create table prep_things (v bigint not null, id integer primary key)`.execute(db.kysely)
    for (let k = 0; k < 8; k++) await db.kysely.executeQuery(CompiledQuery.raw(INSERT, [400 + k, 3]))
    const { rows } = await sql<{ n: number }>`select count(*)::int as n from prep_things where v = 3`.execute(
      db.kysely,
    )
    assert.equal(rows[0]!.n, 8)
  })
})

describe('prepared statements turned off (PLINTH_DB_PREPARED_STATEMENTS=false)', {
  skip: await skipUnlessPostgres(),
}, () => {
  it('sends registered statements unnamed, for poolers that do not carry them across server connections', async () => {
    const scratch = await createTestDatabase()
    const db = await createDatabase(
      { ...dbConfig(scratch.url), dbPreparedStatements: false },
      { logger: silent },
    )
    try {
      await db.connect()
      await sql`create table prep_things (id integer primary key, v integer not null)`.execute(db.kysely)
      const { prepared } = await onOneConnection(db, (run) => run(INSERT, [1, 1]))
      assert.deepEqual(prepared, [])
      const { rows } = await sql<{ n: number }>`select count(*)::int as n from prep_things`.execute(db.kysely)
      assert.equal(rows[0]!.n, 1)
    } finally {
      await db.close()
      await scratch.drop()
    }
  })
})

describe('prepared statements on the embedded database', () => {
  let db: Database

  before(async () => {
    db = await createDatabase(dbConfig(undefined), { logger: silent })
    await db.connect()
    await sql`create table prep_things (id integer primary key, v integer not null)`.execute(db.kysely)
  })
  after(async () => {
    await db?.close()
  })

  it('runs registered statements unnamed on the one shared session, from many connections at once', async () => {
    await Promise.all(
      Array.from({ length: 8 }, (_, k) =>
        db.kysely.transaction().execute(async (trx) => {
          await trx.executeQuery(CompiledQuery.raw(INSERT, [k, 1]))
          await trx.executeQuery(CompiledQuery.raw(UPDATE, [k, 1]))
        }),
      ),
    )
    const { rows } = await sql<{ n: number; total: number }>`
      select count(*)::int as n, sum(v)::int as total from prep_things`.execute(db.kysely)
    assert.deepEqual(rows[0], { n: 8, total: 16 })
    // The worker's session queue keeps its own statements (`plinth_s<n>`, decision 0036): none of
    // the names this layer would send (`preparedName`) exists on the shared session.
    const { rows: prepared } = await sql<{ name: string }>`select name from pg_prepared_statements`.execute(
      db.kysely,
    )
    const ours = new Set([preparedName(INSERT), preparedName(UPDATE)])
    assert.deepEqual(
      prepared.filter((r) => ours.has(r.name)),
      [],
    )
    assert.ok(prepared.every((r) => /^plinth_s\d+$/.test(r.name)))
  })
})
