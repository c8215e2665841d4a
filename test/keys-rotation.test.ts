import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { after, before, beforeEach, describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { sql } from 'kysely'
import { builtinModules } from '../src/app/modules.ts'
import { keyStatus } from '../src/modules/keys/key-status.ts'
import { type RotationEvent, rotateKeys } from '../src/modules/keys/rotation.ts'
import { testLogger } from './helpers/run-logs.ts'
import { keyStoreOf, secretColumn, secretRows, secretsModule, writeSecret } from './helpers/secrets-module.ts'
import { skipUnlessPostgres } from './helpers/services.ts'
import { TEST_MASTER_KEY } from './helpers/test-config.ts'
import { createTestDatabase, type TestDatabase } from './helpers/test-database.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'
import { waitFor } from './helpers/wait-for.ts'

const columns = [...builtinModules.flatMap((m) => m.encryptedColumns ?? []), secretColumn]
const logger = testLogger()
const REFRESH_MS = 1000

describe('key rotation on postgres', { skip: await skipUnlessPostgres() }, () => {
  let testDb: TestDatabase
  let a: TestPlinth
  let b: TestPlinth
  /** A replica that reloads its keys only once a minute: it lags behind any rotation. */
  let laggard: TestPlinth
  const replica = (refresh: string) =>
    startTestPlinth({
      env: {
        DATABASE_URL: testDb.url,
        PLINTH_MASTER_KEY: TEST_MASTER_KEY,
        PLINTH_KEYS_REFRESH: refresh,
        PLINTH_MAX_EVENT_LOOP_DELAY: '0',
      },
      modules: [secretsModule],
    })
  const deps = () => ({ db: a.db.kysely, store: keyStoreOf(a), columns, logger })
  const status = () => keyStatus(a.db.kysely, keyStoreOf(a), columns)

  before(async () => {
    testDb = await createTestDatabase()
    // Replicas starting together: they race to create the first key.
    ;[a, b, laggard] = await Promise.all([replica('1s'), replica('1s'), replica('1m')])
  })
  after(async () => {
    await Promise.all([a?.close(), b?.close(), laggard?.close()])
    await testDb?.drop()
  })
  beforeEach(async () => {
    await sql`delete from test_secrets`.execute(a.db.kysely)
    await Promise.all([a, b, laggard].map((p) => p.context.keyring.refresh()))
  })

  /** Every row decrypts (on replica `p`) to what was last written to it. */
  async function assertReadable(p: TestPlinth, expected: ReadonlyMap<string, string>) {
    const rows = await secretRows(p)
    assert.equal(rows.length, expected.size)
    for (const row of rows) {
      assert.equal(
        await p.context.keyring.decryptStringAsync(row.secret, secretColumn.aad(row.id)),
        expected.get(row.id),
      )
    }
  }

  it('replicas starting together create exactly one first data key, and share it', async () => {
    const rows = await keyStoreOf(a).rows()
    assert.equal(rows.filter((r) => r.state === 'active').length, 1)
    assert.equal(a.context.keyring.keyId, rows[0]!.id)
    assert.equal(b.context.keyring.keyId, rows[0]!.id)
    assert.equal(laggard.context.keyring.keyId, rows[0]!.id)
  })

  it('rotating while two replicas keep writing leaves every value readable, all under the new key, and retires the old one', async () => {
    const expected = new Map<string, string>()
    for (let i = 0; i < 400; i++) expected.set(await writeSecret(a, `seed ${i}`), `seed ${i}`)
    const old = a.context.keyring.keyId
    let writing = true
    let writes = 0
    let staleWrites = 0
    let rotationStarted = false
    // Each writer inserts rows and updates its own (so the last write to a row is known), seeds split between them.
    const seeded = [...expected.keys()]
    const owned = new Map([a, b].map((p, i) => [p, seeded.filter((_, j) => j % 2 === i)]))
    const writer = async (p: TestPlinth) => {
      const mine = owned.get(p)!
      while (writing) {
        const id = Math.random() < 0.5 ? randomUUID() : mine[Math.floor(Math.random() * mine.length)]!
        if (!mine.includes(id)) mine.push(id)
        const text = `write ${writes++} by ${p === a ? 'a' : 'b'}`
        await writeSecret(p, text, id)
        expected.set(id, text)
        if (rotationStarted && p.context.keyring.keyId === old) staleWrites++
        await sleep(2)
      }
    }
    const writers = [writer(a), writer(b)]
    await sleep(50)
    const result = await rotateKeys(deps(), {
      graceMs: 2 * REFRESH_MS,
      batchSize: 50,
      onProgress: (e) => {
        if (e.type === 'started') rotationStarted = true
      },
    })
    writing = false
    await Promise.all(writers)

    assert.equal(result.converged, true)
    assert.deepEqual(result.failed, [])
    assert.ok(result.retired.includes(old), `retired ${result.retired}`)
    assert.deepEqual(result.remaining, {})
    assert.ok(writes > 100, `only ${writes} writes happened during the rotation`)
    assert.ok(
      staleWrites > 0,
      'replicas wrote under the old key after the switch (the case the grace sweep exists for)',
    )
    await assertReadable(b, expected)
    const now = await status()
    assert.deepEqual(now.columns.find((c) => c.table === 'test_secrets')?.byKey, {
      [result.activeId]: expected.size,
    })
    assert.equal(now.keys.find((k) => k.id === old)?.state, 'retired')
    assert.equal(now.unfinished, false)
    for (const row of await secretRows(a)) assert.equal(row.key_id, result.activeId)
  })

  it('an interrupted rotation leaves every value readable; status shows the split; a rerun finishes it', async () => {
    const expected = new Map<string, string>()
    for (let i = 0; i < 300; i++) expected.set(await writeSecret(a, `v${i}`), `v${i}`)
    const old = a.context.keyring.keyId
    const stop = new AbortController()
    let batches = 0
    await assert.rejects(
      rotateKeys(deps(), {
        graceMs: 0,
        batchSize: 40,
        signal: stop.signal,
        onProgress: (e) => {
          if (e.type === 'batch' && e.table === 'test_secrets' && ++batches === 3) stop.abort()
        },
      }),
      { name: 'AbortError' },
    )
    const midway = await status()
    const active = midway.keys.find((k) => k.state === 'active')!
    assert.notEqual(active.id, old)
    assert.deepEqual(midway.columns.find((c) => c.table === 'test_secrets')?.byKey, {
      [active.id]: 120,
      [old]: 180,
    })
    assert.equal(midway.keys.find((k) => k.id === old)?.state, 'retiring')
    assert.equal(midway.unfinished, true)
    // Replicas that have not reloaded yet read the moved values (reloading on the new key id).
    await assertReadable(laggard, expected)

    const events: RotationEvent[] = []
    const resumed = await rotateKeys(deps(), { graceMs: 0, batchSize: 40, onProgress: (e) => events.push(e) })
    assert.equal(resumed.createdId, undefined, 'a rerun resumes, it does not create another key')
    assert.equal(resumed.activeId, active.id)
    assert.equal(resumed.moved, 180)
    assert.deepEqual(resumed.retired, [old])
    assert.deepEqual(events[0], {
      type: 'started',
      activeId: active.id,
      createdId: undefined,
      retiringIds: [old],
    })
    const done = await status()
    assert.deepEqual(done.columns.find((c) => c.table === 'test_secrets')?.byKey, { [active.id]: 300 })
    await b.context.keyring.refresh()
    await assertReadable(b, expected)
  })

  it('a replica picks a rotation up at once when it reads a value under the new key, and by itself within PLINTH_KEYS_REFRESH', async () => {
    const id = await writeSecret(a, 'moved')
    const result = await rotateKeys(deps(), { graceMs: 0 })
    assert.equal(laggard.context.keyring.keyId === result.activeId, false, 'the laggard has not reloaded')
    const [row] = await secretRows(a)
    assert.equal(await laggard.context.keyring.decryptStringAsync(row!.secret, secretColumn.aad(id)), 'moved')
    assert.equal(laggard.context.keyring.keyId, result.activeId, 'reading reloaded the keys')
    // b reads nothing: only its periodic reload (every REFRESH_MS) can bring the new key
    await waitFor('the periodic reload on b', () => b.context.keyring.keyId === result.activeId, {
      timeoutMs: REFRESH_MS * 20,
      intervalMs: 50,
    })
  })

  it('values a lagging replica writes under the old key during the grace period are swept before the old key retires', async () => {
    const old = a.context.keyring.keyId
    const id = randomUUID()
    let late: Promise<string> | undefined
    let lateKey: string | undefined
    const result = await rotateKeys(deps(), {
      graceMs: 3000,
      onProgress: (e) => {
        // The first sweep is done and the rotation waits for replicas: the laggard still writes under the old key.
        if (e.type === 'waiting' && !late) {
          lateKey = laggard.context.keyring.keyId
          late = writeSecret(laggard, 'written late', id)
        }
      },
    })
    assert.ok(late, 'the rotation waited for the grace period')
    await late
    assert.equal(lateKey, old)
    assert.equal(result.converged, true)
    assert.deepEqual(result.retired, [old])
    const [row] = await secretRows(a)
    assert.equal(row!.key_id, result.activeId)
    assert.equal(
      await b.context.keyring.decryptStringAsync(row!.secret, secretColumn.aad(id)),
      'written late',
    )
  })

  it('retires nothing while values under an old key keep reappearing after the grace period, and says so', async () => {
    await writeSecret(a, 'keeps coming back')
    const old = a.context.keyring.keyId
    // Stands in for a replica that never reloads: every value rotation moves is put back under the old key.
    await sql`create function test_secrets_revert() returns trigger language plpgsql as $$
      begin return old; end $$`.execute(a.db.kysely)
    await sql`create trigger test_secrets_revert before update on test_secrets
      for each row execute function test_secrets_revert()`.execute(a.db.kysely)
    try {
      const result = await rotateKeys(deps(), { graceMs: 0, maxPassesAfterGrace: 3 })
      assert.equal(result.converged, false)
      assert.deepEqual(result.retired, [])
      assert.deepEqual(result.remaining, { [old]: 1 })
      assert.equal((await status()).keys.find((k) => k.id === old)?.state, 'retiring')
    } finally {
      await sql`drop trigger test_secrets_revert on test_secrets`.execute(a.db.kysely)
      await sql`drop function test_secrets_revert()`.execute(a.db.kysely)
    }
    const done = await rotateKeys(deps(), { graceMs: 0 })
    assert.equal(done.converged, true)
    assert.deepEqual(done.retired, [old])
  })
})
