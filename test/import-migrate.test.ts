import assert from 'node:assert/strict'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { createUserDirect } from '../src/modules/accounts/bootstrap-admin.ts'
import type { MigrationReport } from '../src/modules/imports/migration-service.ts'
import { NO_RATE_LIMITS } from './helpers/accounts.ts'
import { createPocketBaseData, createSupabaseAuth } from './helpers/migration-sources.ts'
import { runCliWithEnv } from './helpers/run-cli.ts'
import { skipUnlessPostgres } from './helpers/services.ts'
import { TEST_MASTER_KEY } from './helpers/test-config.ts'
import { createTestDatabase, type TestDatabase } from './helpers/test-database.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'

const skip = await skipUnlessPostgres()

const ALICE_PW = 'pocketbase-alice-pw-1'
const CAROL_PW = 'carol-oauth-and-password'
const SB_PW = 'supabase-frank-pw-9'

describe('moving from PocketBase and Supabase, on PostgreSQL', { skip }, () => {
  let plinth: TestPlinth
  let env: Record<string, string>
  let dir: string
  let supabase: TestDatabase

  before(async () => {
    plinth = await startTestPlinth({
      backend: 'postgres',
      env: { ...NO_RATE_LIMITS, PLINTH_MASTER_KEY: TEST_MASTER_KEY },
    })
    env = {
      PLINTH_ENV: 'test',
      PLINTH_LOG_LEVEL: 'silent',
      PLINTH_MASTER_KEY: TEST_MASTER_KEY,
      DATABASE_URL: plinth.config.databaseUrl!,
    }
    dir = mkdtempSync(join(tmpdir(), 'plinth-migrate-'))
    supabase = await createTestDatabase()
    // Someone who already has a Plinth account under an address PocketBase also has.
    await createUserDirect(plinth.context, {
      email: 'dave@example.com',
      password: 'plinth-dave-pw-77',
      role: 'member',
    })
  })
  after(async () => {
    await plinth?.close()
    await supabase?.drop()
    if (dir) rmSync(dir, { recursive: true, force: true })
  })

  const cli = async (...args: string[]) => {
    const r = await runCliWithEnv(['import', ...args, '--json'], env)
    let report: MigrationReport | undefined
    try {
      report = JSON.parse(r.out) as MigrationReport
    } catch {
      // the command failed before reporting
    }
    return { ...r, report }
  }
  const login = (email: string, password: string) =>
    plinth.app.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { email, password } })
  const hashOf = async (email: string) =>
    (
      await plinth.db.kysely
        .selectFrom('users')
        .select('password_hash')
        .where('email_normalized', '=', email)
        .executeTakeFirstOrThrow()
    ).password_hash

  describe('plinth import pocketbase <pb_data> (PocketBase v0.23+ layout)', () => {
    let pbData: string
    before(() => {
      pbData = join(dir, 'pb_data')
      createPocketBaseData(
        pbData,
        [
          {
            id: 'aliceid00000001',
            email: 'Alice@Example.com',
            password: ALICE_PW,
            verified: true,
            created: '2023-05-04 10:11:12.345Z',
          },
          { id: 'bobid0000000002', email: '', password: 'bob-has-no-email-1' },
          { id: 'carolid00000003', email: 'carol@example.com', password: CAROL_PW, oauth: 'google' },
          { id: 'daveid000000004', email: 'dave@example.com', password: 'pb-dave-password-1' },
          { id: 'erinid000000005', email: 'alice@example.com', password: 'alice-twin-password' },
          { id: 'mdhash000000006', email: 'md5@example.com', hash: '5f4dcc3b5aa765d61d8327deb882cf99' },
        ],
        [
          { id: 'post00000000001', title: 'Hello', author: 'aliceid00000001' },
          { id: 'post00000000002', title: 'Again', author: 'carolid00000003' },
        ],
      )
    })

    it('--dry-run lists what comes over and what cannot, and equals the real run; a re-run changes nothing', async () => {
      const dry = await cli('pocketbase', pbData, '--collections', 'posts', '--dry-run')
      assert.equal(dry.code, 1, dry.err)
      const usersBefore = await plinth.db.kysely.selectFrom('users').select('id').execute()
      const real = await cli('pocketbase', pbData, '--collections', 'posts')
      assert.equal(real.code, 1, 'some users cannot come over: not complete')
      assert.deepEqual({ ...dry.report!, dryRun: false }, real.report!)
      assert.equal(
        usersBefore.length + 2,
        (await plinth.db.kysely.selectFrom('users').select('id').execute()).length,
      )

      const byId = Object.fromEntries(real.report!.users.list.map((u) => [u.externalId, u]))
      assert.equal(byId.aliceid00000001!.outcome, 'created')
      assert.equal(byId.aliceid00000001!.verified, true)
      assert.equal(byId.bobid0000000002!.outcome, 'skipped')
      assert.match(byId.bobid0000000002!.reason!, /no e-mail address/)
      assert.equal(byId.carolid00000003!.outcome, 'created')
      assert.deepEqual(byId.carolid00000003!.oauthProviders, ['google'])
      assert.equal(byId.daveid000000004!.outcome, 'exists')
      assert.equal(byId.erinid000000005!.outcome, 'skipped')
      assert.match(byId.erinid000000005!.reason!, /same e-mail address as an earlier/)
      assert.equal(byId.mdhash000000006!.outcome, 'skipped')
      assert.match(byId.mdhash000000006!.reason!, /not bcrypt/)
      assert.ok(
        !real.report!.users.list.some((u) => u.collection === '_superusers'),
        'superusers stay behind',
      )
      assert.deepEqual(real.report!.records, { posts: { inserted: 2, updated: 0, unchanged: 0 } })

      const alice = await plinth.db.kysely
        .selectFrom('users')
        .selectAll()
        .where('email_normalized', '=', 'alice@example.com')
        .executeTakeFirstOrThrow()
      assert.equal(alice.created_at.toISOString(), '2023-05-04T10:11:12.345Z')
      assert.equal(alice.role, 'member')

      const again = await cli('pocketbase', pbData, '--collections', 'posts')
      assert.deepEqual(
        { created: again.report!.users.created, unchanged: again.report!.users.unchanged },
        { created: 0, unchanged: 2 },
      )
      assert.deepEqual(again.report!.records, { posts: { inserted: 0, updated: 0, unchanged: 2 } })
    })

    it('users sign in with their PocketBase password, which is then re-hashed to argon2id', async () => {
      assert.match((await hashOf('alice@example.com'))!, /^\$2a\$10\$/)
      assert.equal((await login('alice@example.com', 'not-her-password')).statusCode, 401)
      assert.match((await hashOf('alice@example.com'))!, /^\$2a\$/, 'a wrong password changes nothing')
      const ok = await login('alice@example.com', ALICE_PW)
      assert.equal(ok.statusCode, 200, ok.body)
      assert.match((await hashOf('alice@example.com'))!, /^\$argon2id\$/)
      assert.equal((await login('alice@example.com', ALICE_PW)).statusCode, 200, 'and again, on the new hash')
      assert.equal((await login('carol@example.com', CAROL_PW)).statusCode, 200)
      // The existing account kept its own password.
      assert.equal((await login('dave@example.com', 'pb-dave-password-1')).statusCode, 401)
      assert.equal((await login('dave@example.com', 'plinth-dave-pw-77')).statusCode, 200)
    })

    it('an unreadable source is refused with a clear error', async () => {
      const bad = join(dir, 'bad_pb')
      mkdirSync(bad)
      writeFileSync(join(bad, 'data.db'), 'this is not a SQLite database at all, just text'.repeat(100))
      let r = await cli('pocketbase', bad)
      assert.equal(r.code, 1)
      assert.match(r.err, /PLINTH_IMPORT_SOURCE_UNREADABLE/)
      r = await cli('pocketbase', join(dir, 'nowhere'))
      assert.equal(r.code, 1)
      assert.match(r.err, /no data\.db here/)
      r = await cli('pocketbase', pbData, '--collections', 'nosuch')
      assert.match(r.err, /no collection named "nosuch"/)
    })
  })

  describe('plinth import supabase <DATABASE_URL>', () => {
    before(async () => {
      await createSupabaseAuth(supabase.url, [
        { email: 'frank@example.com', password: SB_PW },
        { email: 'gina@example.com', providers: ['github'] },
        { email: null, phone: '+15550100', password: 'phone-only-user-1' },
        { email: 'hal@example.com', password: 'deleted-user-pw-1', deleted: true },
        { email: 'ivy@example.com', password: 'unconfirmed-pw-12', confirmed: false },
      ])
    })

    it('brings auth.users with their passwords; --dry-run equals the real run; OAuth-only users are listed as not coming', async () => {
      const withUrl = { ...env, SUPABASE_DB_URL: supabase.url }
      const run = async (...extra: string[]) => {
        const r = await runCliWithEnv(
          ['import', 'supabase', 'env:SUPABASE_DB_URL', '--json', ...extra],
          withUrl,
        )
        return { ...r, report: JSON.parse(r.out) as MigrationReport }
      }
      const d = await run('--dry-run')
      const real = await run()
      assert.deepEqual({ ...d.report, dryRun: false }, real.report)
      assert.equal(real.code, 1)
      const byEmail = Object.fromEntries(real.report.users.list.map((u) => [u.email ?? '(none)', u]))
      assert.equal(byEmail['frank@example.com']!.outcome, 'created')
      assert.equal(byEmail['gina@example.com']!.outcome, 'skipped')
      assert.match(byEmail['gina@example.com']!.reason!, /OAuth-only \(github\)/)
      assert.match(byEmail['(none)']!.reason!, /no e-mail address/)
      assert.match(byEmail['hal@example.com']!.reason!, /deleted/)
      assert.equal(byEmail['ivy@example.com']!.outcome, 'created')
      assert.equal(byEmail['ivy@example.com']!.verified, false)

      assert.equal((await login('frank@example.com', SB_PW)).statusCode, 200)
      assert.match((await hashOf('frank@example.com'))!, /^\$argon2id\$/)
      const again = await run()
      assert.equal(again.report.users.created, 0)
      assert.equal(again.report.users.unchanged, 2)
    })

    it('a database without auth.users is refused', async () => {
      const r = await runCliWithEnv(['import', 'supabase', plinth.config.databaseUrl!], env)
      assert.equal(r.code, 1)
      assert.match(r.err, /no auth\.users table \[PLINTH_IMPORT_SOURCE_UNREADABLE\]/)
    })
  })

  it('each migration is an audit row', async () => {
    const rows = await plinth.db.kysely
      .selectFrom('audit_log')
      .select(['action', 'target_id'])
      .where('target_type', '=', 'migration')
      .execute()
    assert.ok(rows.some((r) => r.target_id === 'pocketbase' && r.action === 'import:dry-run'))
    assert.ok(rows.some((r) => r.target_id === 'supabase' && r.action === 'import:incomplete'))
  })
})
