/**
 * The embedded database's pool holds more than one connection (decision 0031): they share PGlite's
 * one session a protocol unit or a transaction at a time (src/infra/db/session-queue.ts). What
 * depended on the pool being one connection must still hold:
 * - a backup counts exactly what it dumps, while other connections keep writing (its facts are read
 *   inside a transaction that lasts until the dump is taken);
 * - jobs run once each, and jobs that come due later (a delay, a retry) still run, although the
 *   embedded workers no longer poll each on their own (one query wakes them).
 */
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { sql } from 'kysely'
import { backupServiceOf } from '../src/modules/backups/backups.module.ts'
import { jobsKit } from './helpers/jobs-kit.ts'
import { TEST_MASTER_KEY, testConfig } from './helpers/test-config.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'
import { waitFor } from './helpers/wait-for.ts'

describe('a backup of the embedded database while other connections write', () => {
  let plinth: TestPlinth
  let dir: string
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'plinth-embedded-pool-'))
    plinth = await startTestPlinth({
      config: testConfig({
        PLINTH_DB_POOL_MAX: '6',
        PLINTH_BACKUP_DIR: dir,
        PLINTH_MASTER_KEY: TEST_MASTER_KEY,
      }),
    })
    await sql`create table pool_probe (id serial primary key, writer int not null)`.execute(plinth.db.kysely)
  })
  after(async () => {
    await plinth?.close()
    rmSync(dir, { recursive: true, force: true })
  })

  it('records the row counts of the very state it dumped, and verifies', async () => {
    const db = plinth.db.kysely
    let writing = true
    let written = 0
    // Four writers, each on its own pooled connection, inserting as fast as the session lets them.
    const writers = Array.from({ length: 4 }, async (_, writer) => {
      while (writing) {
        await sql`insert into pool_probe (writer) values (${writer})`.execute(db)
        written++
      }
    })
    try {
      await waitFor('the writers to get going', () => written >= 20, { timeoutMs: 30_000, intervalMs: 20 })
      assert.ok(plinth.db.poolStats().total > 1, 'the writers use more than one connection')
      const service = backupServiceOf(plinth.context)
      for (let round = 0; round < 3; round++) {
        const before = written
        const backup = await service.create()
        const counted = backup.manifest?.rowCounts['public.pool_probe'] ?? -1
        assert.ok(counted >= before, `the backup counted ${counted} rows, ${before} were written before it`)
        const verification = await service.verify(backup.id)
        assert.equal(
          verification.ok,
          true,
          `round ${round}: ${JSON.stringify(verification.checks.filter((c) => !c.ok))}`,
        )
        // The writers were not stopped: the dump is a point among their writes, not after them.
        await waitFor('more rows after the backup', () => written > counted + 10, {
          timeoutMs: 30_000,
          intervalMs: 20,
        })
      }
    } finally {
      writing = false
      await Promise.all(writers)
    }
  })
})

describe('jobs on an embedded pool of several connections', () => {
  const kit = jobsKit()
  let plinth: TestPlinth
  before(async () => {
    plinth = await startTestPlinth({
      config: testConfig({
        PLINTH_DB_POOL_MAX: '6',
        PLINTH_JOBS_CONCURRENCY: '3',
        PLINTH_JOBS_POLL_INTERVAL: '500ms',
      }),
      modules: [kit.module],
    })
  })
  after(async () => {
    await plinth?.close()
  })

  it('runs delayed jobs and retries when they come due, each attempt once, while requests query', async () => {
    let reading = true
    const readers = Array.from({ length: 3 }, async () => {
      while (reading) await sql`select count(*) from users`.execute(plinth.db.kysely)
    })
    try {
      const delayed: string[] = []
      const enqueuedAt = Date.now()
      for (let i = 0; i < 10; i++)
        delayed.push((await plinth.jobs.enqueue('kit.record', { tag: `late${i}` }, { delay: 1500 })).id)
      // Fails its first attempt; the retry comes due a second later.
      const flaky = (await plinth.jobs.enqueue('kit.flaky', { failTimes: 1 })).id
      const now: string[] = []
      for (let i = 0; i < 30; i++) now.push((await plinth.jobs.enqueue('kit.record', { tag: `now${i}` })).id)

      await waitFor(
        'every job to finish',
        () =>
          [...delayed, ...now].every((id) => kit.attempts.some((a) => a.id === id)) &&
          kit.attempts.filter((a) => a.id === flaky).length === 2,
        { timeoutMs: 60_000, intervalMs: 50 },
      )
      for (const id of [...delayed, ...now])
        assert.equal(kit.attempts.filter((a) => a.id === id).length, 1, `job ${id} ran once`)
      const late = kit.attempts.filter((a) => delayed.includes(a.id))
      assert.ok(
        late.every((a) => a.at >= enqueuedAt + 1000),
        'the delayed jobs did not run before their time',
      )
      const flakyAttempts = kit.attempts.filter((a) => a.id === flaky).map((a) => a.attempt)
      assert.deepEqual(flakyAttempts, [1, 2])
    } finally {
      reading = false
      await Promise.all(readers)
    }
  })
})
