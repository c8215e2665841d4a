/**
 * The embedded database's connections share PGlite's one session (src/infra/db/session-queue.ts):
 * one connection's extended-protocol query must never be split by another connection's messages.
 * Before the session queue, a simple query landing between one connection's Bind and Execute
 * dropped its portal ("portal \"\" does not exist"), which lost pg-boss completions (jobs run twice)
 * and held the embedded pool at one connection.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { connect, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { PGlite } from '@electric-sql/pglite'
import { sql } from 'kysely'
import pg from 'pg'
import { startSessionServer } from '../src/infra/db/embedded-socket.ts'
import type { EmbeddedWorkerMessage } from '../src/infra/db/embedded-worker.ts'
import { endsUnit, SessionQueue, type SessionQueueStats } from '../src/infra/db/session-queue.ts'
import { jobsKit } from './helpers/jobs-kit.ts'
import { testConfig } from './helpers/test-config.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'
import { holdsFor, waitFor } from './helpers/wait-for.ts'

/** The few frontend messages the tests send by hand (PostgreSQL protocol 3.0). */
const cstr = (s: string) => Buffer.from(`${s}\0`)
function message(type: string, ...parts: Buffer[]): Buffer {
  const body = Buffer.concat(parts)
  const head = Buffer.alloc(5)
  head.write(type, 0, 'latin1')
  head.writeInt32BE(body.length + 4, 1)
  return Buffer.concat([head, body])
}
const int16 = (n: number) => Buffer.from([n >> 8, n & 0xff])
const int32 = (n: number) => {
  const b = Buffer.alloc(4)
  b.writeInt32BE(n)
  return b
}
const serialize = {
  startup: () => {
    const body = Buffer.concat([
      int32(196608),
      cstr('user'),
      cstr('postgres'),
      cstr('database'),
      cstr('postgres'),
      Buffer.from([0]),
    ])
    return Buffer.concat([int32(body.length + 4), body])
  },
  query: (text: string) => message('Q', cstr(text)),
  parse: (text: string) => message('P', cstr(''), cstr(text), int16(0)),
  bind: (values: string[]) =>
    message(
      'B',
      cstr(''),
      cstr(''),
      int16(0),
      int16(values.length),
      ...values.flatMap((v) => [int32(Buffer.byteLength(v)), Buffer.from(v)]),
      int16(0),
    ),
  execute: () => message('E', cstr(''), int32(0)),
  sync: () => message('S'),
  flush: () => message('H'),
  terminate: () => message('X'),
}

/** A raw protocol connection: what it received, as text, and how many ReadyForQuery messages. */
function rawConnection(path: string) {
  const socket: Socket = connect(path)
  let received = Buffer.alloc(0)
  socket.on('data', (d: Buffer) => {
    received = Buffer.concat([received, d])
  })
  const readyCount = () => {
    let n = 0
    for (let i = 0; i + 4 < received.length; i++) {
      if (received[i] === 0x5a && received.readInt32BE(i + 1) === 5) n++
    }
    return n
  }
  return {
    socket,
    readyCount,
    text: () => received.toString('latin1'),
    reset: () => {
      received = Buffer.alloc(0)
    },
  }
}

describe('the embedded database session queue', () => {
  let plinth: TestPlinth
  before(async () => {
    plinth = await startTestPlinth()
  })
  after(async () => {
    await plinth?.close()
  })
  const clientConfig = () => ({
    host: plinth.db.embedded!.socketDir,
    port: plinth.db.embedded!.socketPort,
    user: 'postgres',
    database: 'postgres',
  })

  it('keeps another connection out of a half-sent extended query', async () => {
    const raw = rawConnection(`${plinth.db.embedded!.socketDir}/.s.PGSQL.${plinth.db.embedded!.socketPort}`)
    try {
      raw.socket.write(serialize.startup())
      await waitFor('the raw connection to start', () => raw.readyCount() >= 1)
      raw.reset()
      // Parse and Bind now, Execute and Sync later: the worker has read the first two.
      raw.socket.write(serialize.parse('select $1::int + 40 as n'))
      raw.socket.write(serialize.bind(['2']))
      await new Promise((r) => setImmediate(r))
      const other = new pg.Client(clientConfig())
      const otherAnswer = other
        .connect()
        .then(() => other.query('select 7 as n'))
        .then((r) => r.rows[0].n as number)
      let otherDone = false
      void otherAnswer.finally(() => {
        otherDone = true
      })
      // The other connection's startup and query wait for the open unit to end.
      await holdsFor('the other connection waits for the open unit', () => !otherDone, { forMs: 300 })
      raw.socket.write(serialize.execute())
      raw.socket.write(serialize.sync())
      await waitFor('the raw query to finish', () => raw.readyCount() >= 1)
      assert.doesNotMatch(raw.text(), /does not exist/)
      // DataRow 'D', one column of length 2: "42".
      assert.ok(raw.text().includes('\u0000\u0000\u0000\u000242'), 'the raw connection got 42 as its row')
      assert.equal(await otherAnswer, 7)
      await other.end()
    } finally {
      raw.socket.destroy()
    }
  })

  it('frees the session when a connection leaves mid-unit or mid-transaction', async () => {
    const path = `${plinth.db.embedded!.socketDir}/.s.PGSQL.${plinth.db.embedded!.socketPort}`
    await plinth.db.pool.query('create table if not exists t_left (n int)')
    for (const prefix of [
      // an error inside an unsynced unit: the session skips messages until a Sync (the Flush asks
      // for the answers so far, which PostgreSQL, and the session queue, send only at a Sync or Flush)
      [serialize.parse('select nonsense_column'), serialize.bind([]), serialize.execute(), serialize.flush()],
      // an open transaction with a row in it
      [serialize.query('begin'), serialize.query('insert into t_left values (1)')],
    ]) {
      const raw = rawConnection(path)
      raw.socket.write(serialize.startup())
      await waitFor('the raw connection to start', () => raw.readyCount() >= 1)
      raw.reset()
      for (const m of prefix) raw.socket.write(m)
      // The last message is in (an answer came back), then the connection goes away.
      await waitFor("the raw connection's last answer", () => raw.text().length > 0)
      raw.socket.destroy()
      const { rows } = await plinth.db.pool.query('select count(*)::int as n from t_left')
      assert.equal(rows[0].n, 0)
    }
  })

  it('answers every connection its own rows under concurrent parameterised queries', async () => {
    const clients = await Promise.all(
      Array.from({ length: 8 }, async () => {
        const c = new pg.Client(clientConfig())
        await c.connect()
        return c
      }),
    )
    try {
      const wrong: string[] = []
      await Promise.all(
        clients.map(async (c, ci) => {
          for (let i = 0; i < 150; i++) {
            const want = ci * 1000 + i
            const { rows } = await c.query('select $1::int as n, $2::text as tag', [want, `c${ci}`])
            if (rows[0].n !== want || rows[0].tag !== `c${ci}`) wrong.push(JSON.stringify(rows[0]))
          }
        }),
      )
      assert.deepEqual(wrong, [])
    } finally {
      await Promise.all(clients.map((c) => c.end()))
    }
  })

  it('answers a Parse/Bind/Execute only at the Sync or Flush that follows, as PostgreSQL does', async () => {
    const raw = rawConnection(`${plinth.db.embedded!.socketDir}/.s.PGSQL.${plinth.db.embedded!.socketPort}`)
    try {
      raw.socket.write(serialize.startup())
      await waitFor('the raw connection to start', () => raw.readyCount() >= 1)
      raw.reset()
      raw.socket.write(serialize.parse('select $1::int * 2 as n'))
      raw.socket.write(serialize.bind(['21']))
      raw.socket.write(serialize.execute())
      await holdsFor('no answer before a Flush or Sync', () => raw.text().length === 0, { forMs: 200 })
      raw.socket.write(serialize.flush())
      await waitFor('the answers so far, after the Flush', () =>
        raw.text().includes('\u0000\u0000\u0000\u000242'),
      )
      assert.equal(raw.readyCount(), 0, 'no ReadyForQuery before the Sync')
      raw.socket.write(serialize.sync())
      await waitFor('ReadyForQuery after the Sync', () => raw.readyCount() >= 1)
    } finally {
      raw.socket.destroy()
    }
  })

  it('holds the session for a transaction from its first statement, not from its BEGIN, until it ends', async () => {
    await plinth.db.pool.query('create table if not exists t_lazy (n int)')
    const a = new pg.Client(clientConfig())
    const b = new pg.Client(clientConfig())
    await a.connect()
    await b.connect()
    try {
      await a.query('begin')
      // A BEGIN alone keeps nobody waiting (before: b waited until a ended its transaction).
      const quick = await Promise.race([
        b.query('select 1 as n').then((r) => r.rows[0].n as number),
        new Promise<'waiting'>((resolve) => setTimeout(() => resolve('waiting'), 5000)),
      ])
      assert.equal(quick, 1)
      await a.query('insert into t_lazy values (1)')
      let done = false
      const counted = b.query('select count(*)::int as n from t_lazy').then((r) => {
        done = true
        return r.rows[0].n as number
      })
      await holdsFor("the other connection waits for the transaction's end", () => !done, { forMs: 300 })
      await a.query('commit')
      assert.equal(await counted, 1)
      // An empty transaction, and one rolled back, leave the session free and nothing behind.
      await a.query('begin')
      await a.query('commit')
      await a.query('start transaction isolation level repeatable read read only')
      assert.equal((await a.query('select count(*)::int as n from t_lazy')).rows[0].n, 1)
      await a.query('rollback')
      assert.equal((await b.query('select 2 as n')).rows[0].n, 2)
    } finally {
      await a.end()
      await b.end()
    }
  })

  it("answers a BEGIN while another connection's transaction holds the session; its first statement waits for that transaction's end", async () => {
    await plinth.db.pool.query('create table if not exists t_early (n int)')
    const a = new pg.Client(clientConfig())
    const b = new pg.Client(clientConfig())
    await a.connect()
    await b.connect()
    try {
      const before = await queueStats()
      await a.query('begin')
      await a.query('insert into t_early values (1)')
      // a owns the session; b's BEGIN is answered anyway (before: it waited for a's COMMIT).
      const begun = await Promise.race([
        b.query('start transaction isolation level repeatable read').then(() => 'begun' as const),
        new Promise<'waiting'>((resolve) => setTimeout(() => resolve('waiting'), 5000)),
      ])
      assert.equal(begun, 'begun')
      let done = false
      const counted = b.query('select count(*)::int as n from t_early').then((r) => {
        done = true
        return r.rows[0].n as number
      })
      await holdsFor("b's first statement waits for a's transaction", () => !done, { forMs: 300 })
      await a.query('insert into t_early values (2)')
      await a.query('commit')
      // b's snapshot is taken at its first statement (as on PostgreSQL): both of a's rows.
      assert.equal(await counted, 2)
      // Now b's transaction owns the session: a's next statement waits for b's COMMIT.
      let inserted = false
      const third = a.query('insert into t_early values (3)').then(() => {
        inserted = true
      })
      assert.equal((await b.query('select count(*)::int as n from t_early')).rows[0].n, 2)
      assert.equal(inserted, false)
      await b.query('commit')
      await third
      assert.equal((await b.query('select count(*)::int as n from t_early')).rows[0].n, 3)
      const after = await queueStats()
      assert.ok(after.beginsWhileOwned > before.beginsWhileOwned)
    } finally {
      await a.end()
      await b.end()
    }
  })

  it("keeps a connection's answers in order when it sends a query and a BEGIN together", async () => {
    const a = new pg.Client(clientConfig())
    await a.connect()
    const raw = rawConnection(
      join(plinth.db.embedded!.socketDir, `.s.PGSQL.${plinth.db.embedded!.socketPort}`),
    )
    try {
      raw.socket.write(serialize.startup())
      await waitFor('the raw connection is ready', () => raw.readyCount() === 1)
      raw.reset()
      await a.query('begin')
      await a.query('select 1')
      // While a holds the session: a query, then a BEGIN, in one write. The BEGIN must not be
      // answered before the query that came first.
      raw.socket.write(Buffer.concat([serialize.query("select 'first' as x"), serialize.query('begin')]))
      await holdsFor('nothing is answered while a holds the session', () => raw.readyCount() === 0, {
        forMs: 300,
      })
      await a.query('commit')
      await waitFor('both answered', () => raw.readyCount() === 2)
      const text = raw.text()
      assert.ok(text.indexOf('first') >= 0 && text.indexOf('first') < text.indexOf('BEGIN'), text)
      raw.socket.write(serialize.query('rollback'))
      await waitFor('rolled back', () => raw.readyCount() === 3)
      raw.socket.write(serialize.terminate())
    } finally {
      raw.socket.destroy()
      await a.end()
    }
  })

  /** The worker's session queue counters (queue-stats). */
  const queueStats = () =>
    new Promise<SessionQueueStats>((resolve) => {
      const worker = plinth.db.embedded!.worker()!
      const on = (m: EmbeddedWorkerMessage) => {
        if (m.type !== 'queue-stats') return
        worker.off('message', on)
        resolve(m.stats)
      }
      worker.on('message', on)
      worker.postMessage({ type: 'queue-stats' })
    })

  it('prepares a repeated parameterised query once, and answers each run its own rows', async () => {
    await plinth.db.pool.query('create table if not exists t_cache (id int primary key, v text)')
    await plinth.db.pool.query(
      `insert into t_cache select g, 'v' || g from generate_series(1, 50) g on conflict do nothing`,
    )
    const before = await queueStats()
    for (let id = 1; id <= 50; id++) {
      const { rows } = await plinth.db.pool.query('select v from t_cache where id = $1', [id])
      assert.deepEqual(rows, [{ v: `v${id}` }])
    }
    // Inside a transaction too (its BEGIN runs with the first statement, whose Parse is cached).
    await plinth.db.kysely.transaction().execute(async (trx) => {
      for (const id of [3, 4]) {
        const { rows } = await sql<{ v: string }>`select v from t_cache where id = ${id}`.execute(trx)
        assert.deepEqual(rows, [{ v: `v${id}` }])
      }
    })
    const after = await queueStats()
    assert.ok(
      after.statementHits - before.statementHits >= 49,
      `cache hits: ${after.statementHits - before.statementHits}`,
    )
  })

  it('forgets its prepared statements when the schema changes, or a client discards them', async () => {
    await plinth.db.pool.query('create table if not exists t_stale (id int primary key, a int)')
    await plinth.db.pool.query('insert into t_stale values (1, 10) on conflict do nothing')
    const star = () => plinth.db.pool.query('select * from t_stale where id = $1', [1])
    assert.deepEqual((await star()).rows, [{ id: 1, a: 10 }])
    assert.deepEqual((await star()).rows, [{ id: 1, a: 10 }])
    // A cached plan of `select *` would now fail: "cached plan must not change result type".
    await plinth.db.pool.query('alter table t_stale add column b int default 7')
    assert.deepEqual((await star()).rows, [{ id: 1, a: 10, b: 7 }])
    assert.deepEqual((await star()).rows, [{ id: 1, a: 10, b: 7 }])
    // A client that drops every prepared statement: the next run prepares again.
    await plinth.db.pool.query('discard all')
    assert.deepEqual((await star()).rows, [{ id: 1, a: 10, b: 7 }])
    // DDL inside a transaction that is rolled back.
    const client = await plinth.db.pool.connect()
    try {
      await client.query('begin')
      await client.query('alter table t_stale add column c int default 1')
      assert.deepEqual((await client.query('select * from t_stale where id = $1', [1])).rows, [
        { id: 1, a: 10, b: 7, c: 1 },
      ])
      await client.query('rollback')
    } finally {
      client.release()
    }
    assert.deepEqual((await star()).rows, [{ id: 1, a: 10, b: 7 }])
    // A query that fails to parse is not cached, and does not disturb the next one.
    await assert.rejects(plinth.db.pool.query('selec v from t_cache where id = $1', [1]), /syntax error/)
    await assert.rejects(plinth.db.pool.query('selec v from t_cache where id = $1', [1]), /syntax error/)
    assert.deepEqual((await star()).rows, [{ id: 1, a: 10, b: 7 }])
  })

  it('speaks the startup phase: no SSL, then messages split across reads', async () => {
    const path = `${plinth.db.embedded!.socketDir}/.s.PGSQL.${plinth.db.embedded!.socketPort}`
    const raw = rawConnection(path)
    try {
      // SSLRequest: answered 'N', then the startup packet and a query, written one byte at a time.
      const ssl = Buffer.alloc(8)
      ssl.writeInt32BE(8)
      ssl.writeInt32BE(80877103, 4)
      raw.socket.write(ssl)
      await waitFor("the SSLRequest's answer", () => raw.text() === 'N')
      raw.reset()
      const bytes = Buffer.concat([serialize.startup(), serialize.query('select 40 + 2 as n')])
      for (const byte of bytes) {
        raw.socket.write(Buffer.from([byte]))
        await new Promise((r) => setImmediate(r))
      }
      await waitFor('the startup and the query to be answered', () => raw.readyCount() >= 2)
      assert.ok(raw.text().includes('\u0000\u0000\u0000\u000242'), 'the query answered 42')
    } finally {
      raw.socket.destroy()
    }
  })

  it('assembles a message of many megabytes arriving over many reads, and answers after it', async () => {
    const big = 'x'.repeat(8 * 1024 * 1024)
    const { rows } = await plinth.db.pool.query('select length($1::text) as n, $2::int as after', [big, 7])
    assert.deepEqual(rows, [{ n: big.length, after: 7 }])
    // The connection is usable at once for the next, small query.
    assert.deepEqual((await plinth.db.pool.query('select 40 + 2 as n')).rows, [{ n: 42 }])
  })

  it('knows which frontend messages end a protocol unit', () => {
    assert.equal(endsUnit(serialize.sync()), true)
    assert.equal(endsUnit(serialize.query('select 1')), true)
    assert.equal(endsUnit(serialize.startup()), true)
    assert.equal(endsUnit(serialize.terminate()), true)
    assert.equal(endsUnit(serialize.parse('select 1')), false)
    assert.equal(endsUnit(serialize.bind([])), false)
    assert.equal(endsUnit(serialize.execute()), false)
    assert.equal(endsUnit(serialize.flush()), false)
  })
})

describe('the embedded socket server', () => {
  it('refuses a connection past its limit with PostgreSQL\'s "too many clients" error', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'plinth-socket-'))
    const db = await PGlite.create('memory://')
    const server = await startSessionServer({
      path: join(dir, '.s.PGSQL.5432'),
      queue: new SessionQueue(db),
      maxConnections: 1,
    })
    const first = rawConnection(join(dir, '.s.PGSQL.5432'))
    const second = rawConnection(join(dir, '.s.PGSQL.5432'))
    try {
      first.socket.write(serialize.startup())
      await waitFor('the first connection to start', () => first.readyCount() >= 1)
      await waitFor('the second connection to be refused', () => second.text().includes('53300'))
      assert.match(second.text(), /^E.*too many clients/s)
      first.socket.write(serialize.query('select 1'))
      await waitFor('the first connection to be answered', () => first.readyCount() >= 2)
    } finally {
      first.socket.destroy()
      second.socket.destroy()
      await server.stop()
      await db.close()
      rmSync(dir, { recursive: true, force: true })
    }
  })
})

describe('jobs on the embedded database beside other connections to its socket', () => {
  const kit = jobsKit()
  let plinth: TestPlinth
  before(async () => {
    plinth = await startTestPlinth({
      config: testConfig({ PLINTH_JOBS_CONCURRENCY: '4', PLINTH_JOBS_POLL_INTERVAL: '500ms' }),
      modules: [kit.module],
    })
  })
  after(async () => {
    await plinth?.close()
  })

  it('runs every job exactly once while other connections (a CLI, say) query the same session', async () => {
    const ids: string[] = []
    for (let i = 0; i < 80; i++) {
      const { id } = await plinth.jobs.enqueue('kit.record', { tag: `t${i}` })
      ids.push(id)
    }
    // Parameterised queries on four more connections while the workers fetch and complete.
    const others = await Promise.all(
      Array.from({ length: 4 }, async () => {
        const c = new pg.Client({
          host: plinth.db.embedded!.socketDir,
          port: plinth.db.embedded!.socketPort,
          user: 'postgres',
          database: 'postgres',
        })
        await c.connect()
        return c
      }),
    )
    let reading = true
    const wrong: string[] = []
    const readers = others.map(async (c, ci) => {
      for (let i = 0; reading; i++) {
        const { rows } = await c.query('select $1::int as n', [ci * 100_000 + i])
        if (rows[0].n !== ci * 100_000 + i) wrong.push(JSON.stringify(rows[0]))
      }
    })
    try {
      await waitFor(
        'every job to complete',
        async () => {
          const jobs = await Promise.all(ids.map((id) => plinth.jobs.get(id)))
          return jobs.every((job) => job.state === 'completed')
        },
        { timeoutMs: 120_000, intervalMs: 200 },
      )
    } finally {
      reading = false
      await Promise.all(readers)
      await Promise.all(others.map((c) => c.end()))
    }
    assert.deepEqual(
      ids.filter((id) => kit.of(id).length !== 1),
      [],
      'jobs that did not run exactly once',
    )
    assert.deepEqual(wrong, [])
  })
})
