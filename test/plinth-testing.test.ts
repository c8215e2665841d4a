import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import pg from 'pg'
import { createTestPlinth, TEST_PASSWORD } from '../src/testing/index.ts'
import { skipUnlessPostgres, TEST_DATABASE_URL } from './helpers/services.ts'

/** The test databases `plinth/testing` made from this process that still exist. */
async function ownDatabases(): Promise<string[]> {
  const client = new pg.Client({ connectionString: TEST_DATABASE_URL })
  await client.connect()
  try {
    const { rows } = await client.query<{ datname: string }>(
      'select datname from pg_database where datname like $1 order by datname',
      [`plinth_test_${process.pid}_%`],
    )
    return rows.map((r) => r.datname)
  } finally {
    await client.end()
  }
}

describe('plinth/testing on a PostgreSQL server', { skip: await skipUnlessPostgres() }, () => {
  it('runs on a fresh database of its own, and close() (however often called) drops it', async () => {
    const before = await ownDatabases()
    const t = await createTestPlinth({ databaseUrl: TEST_DATABASE_URL })
    try {
      assert.equal(t.database, 'postgres')
      const created = (await ownDatabases()).filter((d) => !before.includes(d))
      assert.equal(created.length, 1)
      assert.ok(t.config.databaseUrl?.endsWith(`/${created[0]}`))
      const ready = await t.inject('/ready')
      assert.equal(ready.statusCode, 200, ready.body)
    } finally {
      const first = t.close()
      assert.equal(t.close(), first, 'a second close is the first one')
      await first
    }
    assert.deepEqual(await ownDatabases(), before)
  })

  it('drops the database again when the instance cannot start, and rethrows why', async () => {
    const before = await ownDatabases()
    await assert.rejects(
      createTestPlinth({ databaseUrl: TEST_DATABASE_URL, env: { PLINTH_LOG_LEVEL: 'loud' } }),
      /PLINTH_LOG_LEVEL/,
    )
    assert.deepEqual(await ownDatabases(), before)
  })
})

describe('plinth/testing users', () => {
  it('signs a user in with the address and role asked for; their inject acts as them and keeps other headers', async () => {
    const t = await createTestPlinth()
    try {
      assert.equal(t.database, process.env.DATABASE_URL ? 'postgres' : 'embedded')
      const admin = await t.createUser({ role: 'admin', email: 'ops-lead@example.test' })
      assert.equal(admin.email, 'ops-lead@example.test')
      assert.equal(admin.role, 'admin')
      assert.equal(admin.password, TEST_PASSWORD)
      assert.deepEqual(admin.headers, { authorization: `Bearer ${admin.token}` })

      const me = await admin.inject('/api/v1/me')
      assert.equal(me.statusCode, 200, me.body)
      assert.equal(me.json().user.email, 'ops-lead@example.test')
      assert.equal(me.json().user.role, 'admin')

      const withHeaders = await admin.inject({ url: '/api/v1/me', headers: { 'x-request-id': 'kit-test-1' } })
      assert.equal(withHeaders.statusCode, 200)
      assert.equal(withHeaders.headers['x-request-id'], 'kit-test-1')

      const member = await t.createUser()
      assert.equal(member.role, 'member')
      assert.match(member.email, /^member-\d+-[0-9a-f]{6}@example\.test$/)
      assert.equal((await member.inject('/api/v1/admin/errors')).statusCode, 403)
      assert.equal((await t.inject('/api/v1/me')).statusCode, 401, 'the plain inject is anonymous')
    } finally {
      await t.close()
    }
  })

  it('says which user could not be signed in, and why', async () => {
    // One sign-in per window: the second user cannot sign in.
    const t = await createTestPlinth({ env: { PLINTH_RATE_LIMIT_AUTH: '1' } })
    try {
      await t.createUser({ email: 'first@example.test' })
      await assert.rejects(
        t.createUser({ email: 'second@example.test' }),
        /signing second@example\.test in failed: 429/,
      )
    } finally {
      await t.close()
    }
  })
})
