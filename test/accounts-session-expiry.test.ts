import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { after, before, describe, it } from 'node:test'
import { Redis } from 'ioredis'
import { createMemoryCache } from '../src/infra/cache/cache.ts'
import { createSessionService, SESSION_CACHE_TTL_MS } from '../src/modules/accounts/sessions.service.ts'
import { bearer, meStatus, NO_RATE_LIMITS, signUp, uniqueEmail, waitFor } from './helpers/accounts.ts'
import { skipUnlessPostgres, skipUnlessRedis, TEST_REDIS_URL } from './helpers/services.ts'
import { createTestDatabase, type TestDatabase } from './helpers/test-database.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'

/** Two instances on one database (and one Redis, or none): a revocation on one must reach the other. */
async function startPair(redis: boolean) {
  const db: TestDatabase = await createTestDatabase()
  const prefix = `plinth-test-${process.pid}-${randomBytes(4).toString('hex')}:`
  const env = {
    ...NO_RATE_LIMITS,
    DATABASE_URL: db.url,
    ...(redis ? { REDIS_URL: TEST_REDIS_URL, PLINTH_REDIS_PREFIX: prefix } : {}),
  }
  const a = await startTestPlinth({ env })
  const b = await startTestPlinth({ env })
  return {
    a,
    b,
    async close() {
      await Promise.all([a.close(), b.close()])
      if (redis) {
        const client = new Redis(TEST_REDIS_URL)
        const keys = await client.keys(`${prefix}*`)
        if (keys.length > 0) await client.del(...keys)
        client.disconnect()
      }
      await db.drop()
    },
  }
}

const noPostgres = await skipUnlessPostgres()
const noRedis = await skipUnlessRedis()

// These wait on real clocks (idle timeouts, cache expiry), so they wait side by side.
describe('accounts: session expiry and revocation across instances', { concurrency: true }, () => {
  describe('idle and absolute session expiry', { skip: noPostgres }, () => {
    let plinth: TestPlinth
    before(async () => {
      plinth = await startTestPlinth({
        backend: 'postgres',
        env: { ...NO_RATE_LIMITS, PLINTH_SESSION_IDLE_TIMEOUT: '3s', PLINTH_SESSION_MAX_AGE: '7s' },
      })
    })
    after(() => plinth?.close())

    // The session service takes a clock: expiry is checked on it, against the real database,
    // without waiting the timeouts out.
    it('a session unused for the idle timeout ends; one in use lives until the absolute limit, then ends', async () => {
      const { userId } = await signUp(plinth.app, uniqueEmail('expiry'))
      let t = Date.now()
      const sessions = createSessionService({
        db: plinth.db.kysely,
        cache: createMemoryCache(),
        idleTimeoutMs: 3000,
        maxAgeMs: 7000,
        now: () => t,
      })
      const idle = await sessions.create(userId, {})
      const busy = await sessions.create(userId, {})
      assert.ok(await sessions.resolve(idle.token), 'a new session is valid')
      for (let elapsed = 400; elapsed <= 9200; elapsed += 400) {
        t += 400
        // used every 400 ms: never idle, so only the absolute limit (7 s) ends it
        const busyAlive = (await sessions.resolve(busy.token)) !== null
        assert.equal(busyAlive, elapsed < 7000, `the busy session at ${elapsed} ms`)
        // not used since it was created: ended once the idle timeout (3 s) passed
        if (elapsed > 3000)
          assert.equal(await sessions.resolve(idle.token), null, `the idle session at ${elapsed} ms`)
      }
      const fresh = await sessions.create(userId, {})
      const listed = await sessions.list(userId)
      assert.deepEqual(
        listed.map((s) => s.id),
        [fresh.sessionId],
        'expired sessions are not listed',
      )
    })

    it('the configured timeouts reach the sessions the HTTP API issues', async () => {
      const email = uniqueEmail('expiry-config')
      const session = await signUp(plinth.app, email)
      const list = await plinth.app.inject({ url: '/api/v1/me/sessions', headers: bearer(session.token) })
      const [only] = list.json().sessions
      const maxAge = Date.parse(only.expiresAt) - Date.parse(only.createdAt)
      assert.ok(
        Math.abs(maxAge - 7000) < 1000,
        `expires ${maxAge} ms after creation (PLINTH_SESSION_MAX_AGE 7s)`,
      )
    })
  })

  describe('revocation across two instances sharing Redis', {
    skip: noPostgres || noRedis,
  }, () => {
    let pair: Awaited<ReturnType<typeof startPair>>
    before(async () => {
      pair = await startPair(true)
    })
    after(() => pair?.close())

    it('a session revoked on one instance is refused by the other at once', async () => {
      const s = await signUp(pair.a.app, uniqueEmail('pair'))
      assert.equal(await meStatus(pair.b.app, bearer(s.token)), 200) // cached now
      const out = await pair.a.app.inject({
        method: 'POST',
        url: '/api/v1/auth/logout',
        headers: bearer(s.token),
      })
      assert.equal(out.statusCode, 204)
      assert.equal(await meStatus(pair.b.app, bearer(s.token)), 401)
    })
  })

  describe('revocation across two instances without Redis', {
    skip: noPostgres,
  }, () => {
    let pair: Awaited<ReturnType<typeof startPair>>
    before(async () => {
      pair = await startPair(false)
    })
    after(() => pair?.close())

    it(`a revoked session or API token is refused by the other instance within ${SESSION_CACHE_TTL_MS} ms, however busy`, async () => {
      const s = await signUp(pair.a.app, uniqueEmail('pair'))
      const created = await pair.a.app.inject({
        method: 'POST',
        url: '/api/v1/me/tokens',
        headers: bearer(s.token),
        payload: { name: 'pair', scopes: ['self:read'] },
      })
      const { id, token } = created.json() as { id: string; token: string }
      // Cached in b's memory now.
      assert.equal(await meStatus(pair.b.app, bearer(s.token)), 200)
      assert.equal(await meStatus(pair.b.app, bearer(token)), 200)
      const revoke = await pair.a.app.inject({
        method: 'DELETE',
        url: `/api/v1/me/tokens/${id}`,
        headers: bearer(s.token),
      })
      assert.equal(revoke.statusCode, 204)
      const out = await pair.a.app.inject({
        method: 'POST',
        url: '/api/v1/auth/logout',
        headers: bearer(s.token),
      })
      assert.equal(out.statusCode, 204)
      assert.equal(await meStatus(pair.a.app, bearer(s.token)), 401)
      assert.equal(await meStatus(pair.a.app, bearer(token)), 401)
      const revokedAt = Date.now()
      // Polled every 100 ms: a cache entry refreshed by use would never expire.
      const refused = (credential: string) =>
        waitFor(
          'the other instance to refuse',
          async () => (await meStatus(pair.b.app, bearer(credential))) === 401,
          {
            timeoutMs: SESSION_CACHE_TTL_MS + 2000,
            intervalMs: 100,
          },
        )
      await Promise.all([refused(s.token), refused(token)])
      assert.ok(Date.now() - revokedAt <= SESSION_CACHE_TTL_MS + 500)
    })
  })
})
