import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { createMemoryCache } from '../src/infra/cache/cache.ts'
import { createSessionService } from '../src/modules/accounts/sessions.service.ts'
import { createUser, uniqueEmail } from './helpers/accounts.ts'
import { skipUnlessPostgres } from './helpers/services.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'

describe('session revocation inside a transaction', { skip: await skipUnlessPostgres() }, () => {
  let plinth: TestPlinth
  before(async () => {
    plinth = await startTestPlinth({ backend: 'postgres' })
  })
  after(() => plinth?.close())

  it('a lookup cached between revocation and commit does not survive forgetRevoked', async () => {
    const db = plinth.db.kysely
    const sessions = createSessionService({
      db,
      cache: createMemoryCache(),
      idleTimeoutMs: 60_000,
      maxAgeMs: 600_000,
    })
    const user = await createUser(plinth, uniqueEmail('race'), 'member')
    const { token } = await sessions.create(user.userId, {})
    let cachedDuringTransaction: unknown
    await db.transaction().execute(async (trx) => {
      await sessions.revokeAll(user.userId, { trx })
      // Another request, on another connection, still sees the uncommitted row as active and caches it.
      cachedDuringTransaction = await sessions.resolve(token)
    })
    assert.notEqual(
      cachedDuringTransaction,
      null,
      'the race is real: the old row was cached before the commit',
    )
    assert.notEqual(await sessions.resolve(token), null, 'without the fix the cached copy lives on')
    await sessions.forgetRevoked(user.userId)
    assert.equal(await sessions.resolve(token), null, 'after forgetRevoked the revoked session is refused')
  })
})
