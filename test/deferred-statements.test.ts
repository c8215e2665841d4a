import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { CompiledQuery, type Kysely, sql } from 'kysely'
import type pg from 'pg'
import { createDatabase, type Database, IN_MEMORY } from '../src/infra/db/create-db.ts'
import { DEFERRED_LIMIT, deferredStatement } from '../src/infra/db/deferred-statements.ts'
import { preparedStatement } from '../src/infra/db/prepared-statements.ts'
import { createLogger } from '../src/observability/logger.ts'
import { skipUnlessPostgres } from './helpers/services.ts'
import { createTestDatabase, type TestDatabase } from './helpers/test-database.ts'

const silent = createLogger({ env: 'test', logLevel: 'silent', logFormat: 'json' })
const dbConfig = (databaseUrl: string | undefined, dbPoolMax = 1) => ({
  databaseUrl,
  dataDir: IN_MEMORY,
  dbPoolMax,
  dbConnectTimeout: 5000,
  dbStatementTimeout: 0,
  dbQueryTimeout: 10_000,
  dbIdleTimeout: 10_000,
  dbConnectDeadline: 10_000,
})

/** Deferred (and, on PostgreSQL, named): `v` must not be negative (a check the test uses to make it fail). */
const INSERT = deferredStatement(preparedStatement('insert into d_things (id, v) values ($1, $2)'))
/** The same insert, not registered: sent at once. */
const INSERT_NOW = 'insert into d_things (id, v)  values ($1, $2)'
/** The change the deferred row goes with. */
const CHANGE = 'insert into d_changes (id) values ($1)'

// biome-ignore lint/suspicious/noExplicitAny: scratch tables, not Plinth's
type Db = Kysely<any>
const run = (db: Db, text: string, values: unknown[] = []) => db.executeQuery(CompiledQuery.raw(text, values))

async function ids(db: Db, table: 'd_things' | 'd_changes'): Promise<number[]> {
  const { rows } = await sql<{ id: number }>`select id from ${sql.table(table)} order by id`.execute(db)
  return rows.map((r) => r.id)
}

async function createTables(db: Db): Promise<void> {
  await sql`create table d_things (id integer primary key, v integer not null check (v >= 0))`.execute(db)
  await sql`create table d_changes (id integer primary key)`.execute(db)
}

describe('deferred statements: the registry', () => {
  it('accepts only an insert of one row, without returning, on conflict or select', () => {
    assert.equal(deferredStatement(INSERT), INSERT)
    for (const text of [
      'insert into d_things (id, v) values ($1, $2) returning id',
      'insert into d_things (id, v) values ($1, $2) on conflict do nothing',
      'insert into d_things (id, v) values ($1, $2), ($3, $4)',
      'insert into d_things (id, v) select $1, $2',
      'update d_things set v = $2 where id = $1',
      'delete from d_things where id = $1',
      'select 1',
    ])
      assert.throws(() => deferredStatement(text), TypeError, text)
  })

  it('holds at most DEFERRED_LIMIT texts', () => {
    assert.throws(() => {
      for (let i = 0; i <= DEFERRED_LIMIT; i++)
        deferredStatement(`insert into d_things (id, v) values ($1, ${i})`)
    }, /at most 8/)
  })
})

describe('deferred statements on postgres', { skip: await skipUnlessPostgres() }, () => {
  let scratch: TestDatabase
  let db: Database
  let client: pg.PoolClient
  /** Writes the pool's one connection made on its socket. */
  let writes = 0
  /** Answers PostgreSQL gave on it (ReadyForQuery: one per Sync or simple query). */
  let answers = 0

  before(async () => {
    scratch = await createTestDatabase()
    db = await createDatabase(dbConfig(scratch.url), { logger: silent })
    await db.connect()
    await createTables(db.kysely)
    // The pool holds one connection: count the writes on its socket (one per round trip).
    client = await db.pool.connect()
    const stream = (client as unknown as { connection: { stream: Record<string, unknown> } }).connection
      .stream
    for (const method of ['_write', '_writev'] as const) {
      const original = stream[method] as (...args: unknown[]) => unknown
      stream[method] = (...args: unknown[]) => {
        writes++
        return original.apply(stream, args)
      }
    }
    ;(client as unknown as { connection: { on(event: string, fn: () => void): void } }).connection.on(
      'readyForQuery',
      () => answers++,
    )
    client.release()
  })
  after(async () => {
    await db?.close()
    await scratch?.drop()
  })

  /** Writes `fn` makes on the connection. */
  async function counted(fn: () => Promise<unknown>): Promise<number> {
    const before = writes
    await fn()
    return writes - before
  }

  it('inside a transaction, sends the insert with the COMMIT in one write; both commit', async () => {
    const deferred = await counted(() =>
      db.kysely.transaction().execute(async (trx) => {
        await run(trx, CHANGE, [1])
        const result = await run(trx, INSERT, [1, 10])
        assert.equal(result.numAffectedRows, 1n)
      }),
    )
    const sentAtOnce = await counted(() =>
      db.kysely.transaction().execute(async (trx) => {
        await run(trx, CHANGE, [2])
        await run(trx, INSERT_NOW, [2, 10])
      }),
    )
    // begin, the change, the commit (with the insert) against begin, change, insert, commit.
    assert.equal(deferred, 3)
    assert.equal(sentAtOnce, 4)
    assert.deepEqual(await ids(db.kysely, 'd_things'), [1, 2])
    assert.deepEqual(await ids(db.kysely, 'd_changes'), [1, 2])
  })

  it('once prepared on the connection, goes with the COMMIT under one Sync: one answer for both', async () => {
    // The first test parsed the insert on this connection; from then on it is Bind and Execute only.
    const before = answers
    const sent = await counted(() =>
      db.kysely.transaction().execute(async (trx) => {
        await run(trx, CHANGE, [5])
        await run(trx, INSERT, [5, 10])
        await run(trx, INSERT, [6, 10])
      }),
    )
    // begin, the change, the two inserts and the commit: three writes, three answers (not four:
    // PostgreSQL answers the inserts and the COMMIT together).
    assert.equal(sent, 3)
    assert.equal(answers - before, 3)
    assert.ok((await ids(db.kysely, 'd_things')).includes(6))
    assert.ok((await ids(db.kysely, 'd_changes')).includes(5))
  })

  it('runs before the next statement of the transaction, which sees its row', async () => {
    await db.kysely.transaction().execute(async (trx) => {
      await run(trx, INSERT, [3, 1])
      await run(trx, INSERT, [4, 1])
      const { rows } = await sql<{
        n: number
      }>`select count(*)::int as n from d_things where id in (3, 4)`.execute(trx)
      assert.equal(rows[0]!.n, 2)
      await run(trx, CHANGE, [3])
    })
    assert.deepEqual(await ids(db.kysely, 'd_things'), [1, 2, 3, 4, 5, 6])
  })

  it('a refused insert fails the COMMIT with its own error, and nothing of the transaction commits', async () => {
    await assert.rejects(
      db.kysely.transaction().execute(async (trx) => {
        await run(trx, CHANGE, [10])
        await run(trx, INSERT, [10, -1]) // resolves: the refusal comes with the next statement
      }),
      (err: { code?: string }) => err.code === '23514',
    )
    // With a later statement instead of the COMMIT: that statement fails with the insert's error.
    await assert.rejects(
      db.kysely.transaction().execute(async (trx) => {
        await run(trx, CHANGE, [11])
        await run(trx, INSERT, [11, -1])
        await run(trx, CHANGE, [12])
      }),
      (err: { code?: string }) => err.code === '23514',
    )
    assert.deepEqual(await ids(db.kysely, 'd_changes'), [1, 2, 3, 5])
    assert.deepEqual(await ids(db.kysely, 'd_things'), [1, 2, 3, 4, 5, 6])
    // The connection is clean afterwards: a transaction on it commits.
    await db.kysely.transaction().execute((trx) => run(trx, INSERT, [12, 1]))
    assert.deepEqual(await ids(db.kysely, 'd_things'), [1, 2, 3, 4, 5, 6, 12])
  })

  it('is undone by a rollback to a savepoint set before it, and dropped unsent by a rollback', async () => {
    await db.kysely.transaction().execute(async (trx) => {
      await run(trx, CHANGE, [20])
      await sql`savepoint before_row`.execute(trx)
      await run(trx, INSERT, [20, 1])
      await sql`rollback to savepoint before_row`.execute(trx)
    })
    assert.deepEqual(await ids(db.kysely, 'd_changes'), [1, 2, 3, 5, 20])
    assert.ok(!(await ids(db.kysely, 'd_things')).includes(20))

    const sent = await counted(() =>
      assert.rejects(
        db.kysely.transaction().execute(async (trx) => {
          await run(trx, INSERT, [21, 1])
          throw new Error('the change fails after its row was recorded')
        }),
        /the change fails/,
      ),
    )
    assert.equal(sent, 2) // begin, rollback
    assert.ok(!(await ids(db.kysely, 'd_things')).includes(21))
  })

  it('runs at once outside a transaction', async () => {
    const sent = await counted(() => run(db.kysely, INSERT, [30, 1]))
    assert.equal(sent, 1)
    assert.ok((await ids(db.kysely, 'd_things')).includes(30))
    // …and at once in a transaction that already failed (where it fails, as any statement would).
    await assert.rejects(
      db.kysely.transaction().execute(async (trx) => {
        await run(trx, CHANGE, [31])
        await run(trx, CHANGE, [31]).catch(() => {}) // a unique violation: the transaction is aborted
        await run(trx, INSERT, [31, 1])
      }),
      (err: { code?: string }) => err.code === '25P02',
    )
  })

  it("before a statement sent with a callback, in node-postgres' own queue", async () => {
    const c = await db.pool.connect()
    try {
      await c.query('begin')
      await c.query(INSERT, [40, 1])
      const n = await new Promise<number>((resolve, reject) =>
        c.query('select count(*)::int as n from d_things where id = 40', (err: Error, res: pg.QueryResult) =>
          err ? reject(err) : resolve(res.rows[0].n),
        ),
      )
      assert.equal(n, 1)
      await c.query('commit')
    } finally {
      c.release()
    }
    assert.ok((await ids(db.kysely, 'd_things')).includes(40))
  })

  it('forgets what a client handed back mid-transaction still deferred', async () => {
    const c = await db.pool.connect()
    await c.query('begin')
    await c.query(INSERT, [50, 1])
    // Handed back without ending its transaction (a bug of its user): the next user of the
    // connection continues that transaction, but the deferred row is not sent into it.
    c.release()
    await db.kysely.transaction().execute((trx) => run(trx, CHANGE, [50]))
    assert.ok(!(await ids(db.kysely, 'd_things')).includes(50))
    assert.ok((await ids(db.kysely, 'd_changes')).includes(50))
  })
})

describe('deferred statements, many transactions at once on postgres', {
  skip: await skipUnlessPostgres(),
}, () => {
  it('commits each transaction with its own rows, and none of one whose row was refused', async () => {
    const scratch = await createTestDatabase()
    const db = await createDatabase(dbConfig(scratch.url, 4), { logger: silent })
    try {
      await db.connect()
      await createTables(db.kysely)
      const outcomes = await Promise.allSettled(
        Array.from({ length: 40 }, (_, i) =>
          db.kysely.transaction().execute(async (trx) => {
            await run(trx, CHANGE, [i])
            await run(trx, INSERT, [i, i % 5 === 0 ? -1 : 1])
            await run(trx, INSERT, [1000 + i, 1])
          }),
        ),
      )
      const good = Array.from({ length: 40 }, (_, i) => i).filter((i) => i % 5 !== 0)
      assert.deepEqual(
        outcomes.flatMap((o, i) => (o.status === 'fulfilled' ? [i] : [])),
        good,
      )
      assert.deepEqual(await ids(db.kysely, 'd_changes'), good)
      assert.deepEqual(await ids(db.kysely, 'd_things'), [...good, ...good.map((i) => 1000 + i)])
    } finally {
      await db.close()
      await scratch.drop()
    }
  })
})

describe('deferred statements on the embedded database', () => {
  let db: Database
  before(async () => {
    db = await createDatabase(dbConfig(undefined, 2), { logger: silent })
    await db.connect()
    await createTables(db.kysely)
  })
  after(() => db?.close())

  it("runs them at once: a refusal is the insert's own error", async () => {
    await assert.rejects(
      db.kysely.transaction().execute(async (trx) => {
        await run(trx, CHANGE, [1])
        await assert.rejects(run(trx, INSERT, [1, -1]), (err: { code?: string }) => err.code === '23514')
        throw new Error('refused')
      }),
      /refused/,
    )
    await db.kysely.transaction().execute(async (trx) => {
      await run(trx, CHANGE, [2])
      await run(trx, INSERT, [2, 1])
    })
    assert.deepEqual(await ids(db.kysely, 'd_changes'), [2])
    assert.deepEqual(await ids(db.kysely, 'd_things'), [2])
  })
})
