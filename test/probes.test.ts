import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'

describe('cheap probes', () => {
  let plinth: TestPlinth
  before(async () => {
    // The workers idle quietly here: each job type's worker polls the database every
    // PLINTH_JOBS_POLL_INTERVAL (1 s by default, some twenty types), and those checkouts would
    // land inside the probes' window and be counted as theirs.
    plinth = await startTestPlinth({
      env: { PLINTH_JOBS_POLL_INTERVAL: '1h', PLINTH_JOBS_MONITOR_INTERVAL: '1h' },
    })
  })
  after(() => plinth?.close())

  /** Database round trips (pool checkouts) made while `run` runs. */
  async function checkouts(run: () => Promise<unknown>): Promise<number> {
    let n = 0
    const count = () => n++
    plinth.db.pool.on('acquire', count)
    try {
      await run()
    } finally {
      plinth.db.pool.off('acquire', count)
    }
    return n
  }

  it('answers 50 concurrent /ready and /health with a handful of queries, not several per probe', async () => {
    // Warm: the first probe fills the migrations cache.
    assert.equal((await plinth.app.inject('/ready')).statusCode, 200)
    const used = await checkouts(() =>
      Promise.all(
        Array.from({ length: 50 }, (_, i) =>
          plinth.app.inject(i % 2 ? '/ready' : '/health').then((res) => {
            assert.ok([200].includes(res.statusCode), res.body)
          }),
        ),
      ),
    )
    // Concurrent probes share each check's run (database ping, jobs heartbeat) and "no migration
    // pending" is cached, so the count stays a handful instead of growing with the probes
    // (before: a ping and Kysely's migration introspection per probe, 150+ round trips).
    assert.ok(used <= 6, `${used} database checkouts for 50 probes`)
  })

  it('sees a migration reverted by this process at once (the cache is dropped)', async () => {
    assert.equal((await plinth.app.inject('/ready')).statusCode, 200)
    await plinth.migrator.down()
    try {
      assert.equal((await plinth.app.inject('/ready')).statusCode, 503)
    } finally {
      await plinth.migrator.up()
    }
    assert.equal((await plinth.app.inject('/ready')).statusCode, 200)
  })
})
