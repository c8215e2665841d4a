/**
 * The embedded database's connections share PGlite's one session (src/infra/db/session-queue.ts):
 * one connection's extended-protocol query must never be split by another connection's messages.
 * Before the session queue, a simple query landing between one connection's Bind and Execute
 * dropped its portal ("portal \"\" does not exist"), which lost pg-boss completions (jobs run twice)
 * and held the embedded pool at one connection.
 */
import assert from 'node:assert/strict'
import { connect, type Socket } from 'node:net'
import { after, before, describe, it } from 'node:test'
import pg from 'pg'
import { endsUnit } from '../src/infra/db/session-queue.ts'
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
