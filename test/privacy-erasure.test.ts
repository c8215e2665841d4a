import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { after, before, describe, it } from 'node:test'
import { type Kysely, sql } from 'kysely'
import { pseudonymFor } from '../src/core/privacy.ts'
import type { PlinthTables } from '../src/infra/db/tables.ts'
import { generateTotp } from '../src/modules/accounts/totp.ts'
import { AUDIT_CHAIN_LOCK } from '../src/modules/audit/audit.service.ts'
import { verifyAuditChain } from '../src/modules/audit/audit-chain.ts'
import { hashedDocumentV1 } from '../src/modules/audit/audit-hash.ts'
import {
  bearer,
  createUser,
  loginResponse,
  PASSWORD,
  recordEvents,
  type Session,
  uniqueEmail,
} from './helpers/accounts.ts'
import { assertProblem } from './helpers/assert-problem.ts'
import { bypassingTriggers } from './helpers/bypass-triggers.ts'
import { buildPerson, type Person, PRIVACY_ENV, tablesContaining } from './helpers/privacy.ts'
import { skipUnlessPostgres } from './helpers/services.ts'
import { spawnCli } from './helpers/spawn-cli.ts'
import { TEST_MASTER_KEY } from './helpers/test-config.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'

/** Where the person's identifying values are still found, table by table. */
async function traces(plinth: TestPlinth, person: Person) {
  const found: Record<string, Record<string, number>> = {}
  for (const [what, value] of Object.entries({
    'user id': person.userId,
    'e-mail': person.email,
    ip: person.ip,
    'user agent': person.userAgent,
  })) {
    const tables = await tablesContaining(plinth, value)
    if (Object.keys(tables).length > 0) found[what] = tables
  }
  return found
}

const erase = (person: Person, payload: Record<string, unknown>, token = person.session.token) =>
  person.send({ method: 'DELETE', url: '/api/v1/me', token, payload })

for (const backend of ['embedded', 'postgres'] as const) {
  describe(`privacy erasure on ${backend}`, {
    skip: backend === 'postgres' ? await skipUnlessPostgres() : false,
  }, () => {
    let plinth: TestPlinth
    let db: Kysely<PlinthTables>
    let admin: Session
    let person: Person
    let pseudonym: string

    before(async () => {
      plinth = await startTestPlinth({ backend, env: PRIVACY_ENV })
      db = plinth.db.kysely
      admin = await createUser(plinth, uniqueEmail('admin'), 'admin')
      person = await buildPerson(plinth, admin)
      pseudonym = pseudonymFor(person.userId, plinth.config.secretKey)
    })
    after(() => plinth?.close())

    it('asks for the password (and the second factor) before erasing, and records each refusal', async () => {
      const member = await createUser(plinth, uniqueEmail('member'), 'member')
      assertProblem(
        await erase(person, { password: 'not-my-password-1' }),
        401,
        'PLINTH_AUTH_INVALID_CREDENTIALS',
      )
      assertProblem(await erase(person, { password: PASSWORD }), 401, 'PLINTH_AUTH_MFA_INVALID')
      assertProblem(
        await erase(person, { password: PASSWORD, code: '000000' }),
        401,
        'PLINTH_AUTH_MFA_INVALID',
      )
      assertProblem(
        await erase(person, { password: PASSWORD, code: generateTotp(person.totpSecret) }, person.apiToken),
        403,
        'PLINTH_AUTH_FORBIDDEN',
      )
      assertProblem(await erase(person, {}), 422, 'PLINTH_HTTP_VALIDATION_FAILED')
      // Nothing was erased, and a member without a second factor needs only the password.
      assert.equal((await person.send({ url: '/api/v1/me', token: person.session.token })).statusCode, 200)
      assertProblem(
        await plinth.app.inject({
          method: 'DELETE',
          url: '/api/v1/me',
          headers: bearer(member.token),
          payload: { password: 'wrong-password-9' },
        }),
        401,
        'PLINTH_AUTH_INVALID_CREDENTIALS',
      )
      await plinth.context.audit.seal()
      const refusals = await db
        .selectFrom('audit_log')
        .select(['target_id', 'details'])
        .where('action', '=', 'user:erased')
        .where('outcome', '=', 'failure')
        .execute()
      assert.equal(refusals.filter((r) => r.target_id === person.userId).length, 3)
    })

    it('erases the person: nothing outside pseudonymised audit rows still names them, and the chain verifies', async () => {
      const events = recordEvents(plinth)
      // The scan sees them everywhere beforehand, the job engine's tables included.
      const found = await traces(plinth, person)
      for (const table of ['public.users', 'public.sessions', 'public.audit_log', 'public.mail_outbox'])
        assert.ok(found.ip?.[table] ?? found['e-mail']?.[table], `${table} names them before erasure`)
      assert.ok(Object.keys(found['user id']!).some((t) => t.startsWith('plinth_jobs.')))
      // Their session and token are in use (and cached) right up to the erasure.
      assert.equal((await person.send({ url: '/api/v1/me', token: person.apiToken })).statusCode, 200)
      const res = await erase(person, { password: PASSWORD, recoveryCode: person.recoveryCodes[0] })
      assert.equal(res.statusCode, 200, res.body)
      const report = res.json()
      assert.equal(report.pseudonym, pseudonym)
      assert.match(report.pseudonym, /^erased:[0-9a-f]{32}$/)
      for (const key of [
        'users.id',
        'sessions.user_id',
        'api_tokens.user_id',
        'audit_log',
        'mail_outbox.to_address',
      ])
        assert.ok(report.rows[key] > 0, `${key} erased: ${res.body}`)

      // Refused at once, although their lookups were cached a moment ago.
      for (const token of [person.session.token, person.apiToken])
        assertProblem(await person.send({ url: '/api/v1/me', token }), 401, 'PLINTH_AUTH_SESSION_EXPIRED')

      await plinth.context.audit.seal()
      assert.deepEqual(await traces(plinth, person), {}, 'the person is still named somewhere')
      // (A sign-in attempt with the address afterwards is recorded like any unknown address.)
      assertProblem(await loginResponse(plinth.app, person.email), 401, 'PLINTH_AUTH_INVALID_CREDENTIALS')
      const kept = await db.selectFrom('audit_log').selectAll().where('actor_id', '=', pseudonym).execute()
      assert.ok(kept.length >= 5, 'their audit rows are kept, under the pseudonym')
      assert.ok(kept.every((r) => r.ip === null && r.user_agent === null))
      const report2 = await verifyAuditChain(db)
      assert.equal(report2.ok, true, report2.failure?.message)
      assert.ok(report2.erased >= 5)
      assert.equal(report2.unverifiable, 0)

      const [erased] = await db
        .selectFrom('audit_log')
        .selectAll()
        .where('action', '=', 'user:erased')
        .where('outcome', '=', 'success')
        .execute()
      assert.equal(erased!.actor_id, pseudonym)
      assert.equal(erased!.target_id, pseudonym)
      assert.equal(erased!.ip, null, 'their own erasure row does not keep their address')
      assert.deepEqual(
        (await events.settled()).filter((e) => e.type === 'user:erased').map((e) => e.target?.id),
        [pseudonym],
      )
      events.stop()
      // What the person created for everyone stays, without them.
      const webhooks = await db
        .selectFrom('webhook_subscriptions')
        .select('created_by')
        .where('description', '=', 'mine')
        .execute()
      assert.deepEqual(webhooks, [{ created_by: null }])
    })

    it('still names the first forged row of a chain with pseudonymised rows, and refuses forged erasures', async () => {
      const [row] = await db
        .selectFrom('audit_log')
        .selectAll()
        .where('actor_id', '=', pseudonym)
        .where('erasure', 'is not', null)
        .orderBy('id')
        .limit(1)
        .execute()
      assert.ok(row?.seq)
      // A changed non-personal field.
      await bypassingTriggers(db, (trx) =>
        sql`update audit_log set outcome = 'failure' where id = ${row.id}`.execute(trx),
      )
      let report = await verifyAuditChain(db)
      assert.equal(report.failure?.seq, row.seq)
      assert.equal(report.failure?.reason, 'hash-mismatch')
      await bypassingTriggers(db, (trx) =>
        sql`update audit_log set outcome = ${row.outcome} where id = ${row.id}`.execute(trx),
      )
      // A pseudonymised actor swapped for someone else.
      await bypassingTriggers(db, (trx) =>
        sql`update audit_log set actor_id = ${admin.userId} where id = ${row.id}`.execute(trx),
      )
      report = await verifyAuditChain(db)
      assert.equal(report.failure?.seq, row.seq)
      assert.equal(report.failure?.reason, 'erasure-invalid')
      await bypassingTriggers(db, (trx) =>
        sql`update audit_log set actor_id = ${pseudonym} where id = ${row.id}`.execute(trx),
      )
      assert.equal((await verifyAuditChain(db)).ok, true, 'restored')

      // The database lets erasure write only pseudonyms or nothing, and nothing else.
      const { rows: sealed } = await sql<{
        id: string
      }>`select id from audit_log where actor_id = ${admin.userId}
        and seq is not null order by id limit 1`.execute(db)
      const underFlag = (statement: string) =>
        db.transaction().execute(async (trx) => {
          await sql`select set_config('plinth.audit_erase', 'on', true)`.execute(trx)
          await sql.raw(statement.replace('$id', sealed[0]!.id)).execute(trx)
        })
      for (const statement of [
        `update audit_log set actor_id = 'someone-else' where id = $id`,
        `update audit_log set action = 'user:forged' where id = $id`,
        `update audit_log set ip = '192.0.2.1', salt = null, erasure = '{}' where id = $id`,
        `update audit_log set actor_id = 'erased:x' where id = $id`,
      ])
        await assert.rejects(
          underFlag(statement),
          (err: { code?: string }) => err.code === '42501',
          statement,
        )
      await assert.rejects(
        sql`update audit_log set actor_id = 'erased:x', salt = null, erasure = '{}' where id = ${sealed[0]!.id}`.execute(
          db,
        ),
        (err: { code?: string }) => err.code === '42501',
        'without the erasure flag',
      )
    })

    it('lets an administrator erase someone, and keeps their own name on that record', async () => {
      const member = await createUser(plinth, uniqueEmail('member'), 'member')
      const operator = await createUser(plinth, uniqueEmail('operator'), 'operator')
      assertProblem(
        await plinth.app.inject({
          method: 'DELETE',
          url: `/api/v1/admin/users/${member.userId}`,
          headers: bearer(operator.token),
        }),
        403,
        'PLINTH_AUTH_FORBIDDEN',
      )
      // The administrator changes the member's role first: that row will name both.
      const patched = await plinth.app.inject({
        method: 'PATCH',
        url: `/api/v1/admin/users/${member.userId}`,
        headers: bearer(admin.token),
        payload: { role: 'viewer' },
      })
      assert.equal(patched.statusCode, 200, patched.body)
      const res = await plinth.app.inject({
        method: 'DELETE',
        url: `/api/v1/admin/users/${member.userId}`,
        headers: bearer(admin.token),
      })
      assert.equal(res.statusCode, 200, res.body)
      const memberPseudonym = pseudonymFor(member.userId, plinth.config.secretKey)
      assertProblem(
        await plinth.app.inject({ url: '/api/v1/me', headers: bearer(member.token) }),
        401,
        'PLINTH_AUTH_SESSION_EXPIRED',
      )
      assertProblem(
        await plinth.app.inject({
          method: 'DELETE',
          url: `/api/v1/admin/users/${member.userId}`,
          headers: bearer(admin.token),
        }),
        404,
        'PLINTH_USER_NOT_FOUND',
      )
      await plinth.context.audit.seal()
      const record = await db
        .selectFrom('audit_log')
        .selectAll()
        .where('action', '=', 'user:erased')
        .where('target_id', '=', memberPseudonym)
        .executeTakeFirstOrThrow()
      assert.equal(record.actor_id, admin.userId)
      assert.equal((record.details as { by: string }).by, 'admin')
      const changed = await db
        .selectFrom('audit_log')
        .select(['actor_id', 'target_id', 'ip'])
        .where('action', '=', 'user:role-changed')
        .where('target_id', '=', memberPseudonym)
        .executeTakeFirstOrThrow()
      assert.equal(changed.actor_id, admin.userId)
      assert.equal(changed.ip, '127.0.0.1', 'the administrator’s own address stays')
      const tables = await tablesContaining(plinth, member.userId)
      assert.deepEqual(tables, {})
      assert.equal((await verifyAuditChain(db)).ok, true)
    })

    it('refuses to erase the last administrator, by themselves or by the API', async () => {
      assertProblem(
        await plinth.app.inject({
          method: 'DELETE',
          url: `/api/v1/admin/users/${admin.userId}`,
          headers: bearer(admin.token),
        }),
        409,
        'PLINTH_USER_LAST_ADMIN',
      )
      assertProblem(
        await plinth.app.inject({
          method: 'DELETE',
          url: '/api/v1/me',
          headers: bearer(admin.token),
          payload: { password: PASSWORD },
        }),
        409,
        'PLINTH_USER_LAST_ADMIN',
      )
      assert.equal(
        (await plinth.app.inject({ url: '/api/v1/me', headers: bearer(admin.token) })).statusCode,
        200,
      )
    })

    it('pseudonymises a row sealed with hash v1 too, which then verifies by its place in the chain only', async () => {
      const other = await createUser(plinth, uniqueEmail('old'), 'member')
      await plinth.context.audit.seal()
      // A row as a version before migration 0010 sealed it: no salt, the hash over the raw values.
      await bypassingTriggers(db, async (trx) => {
        await sql`select pg_advisory_xact_lock(${AUDIT_CHAIN_LOCK})`.execute(trx)
        const head = await trx
          .selectFrom('audit_log')
          .select(['seq', 'hash'])
          .where('seq', 'is not', null)
          .orderBy('seq', 'desc')
          .limit(1)
          .executeTakeFirstOrThrow()
        const seq = String(BigInt(head.seq!) + 1n)
        const { rows } = await sql<{
          id: string
          at: Date
        }>`insert into audit_log (at, actor_type, actor_id, action, target_type, target_id, outcome, ip)
          values (${new Date()}, 'user', ${other.userId}, 'thing:done', 'user', ${other.userId}, 'success', '198.51.100.9') returning id, at`.execute(
          trx,
        )
        const row = await trx
          .selectFrom('audit_log')
          .selectAll()
          .where('id', '=', rows[0]!.id)
          .executeTakeFirstOrThrow()
        const hash = createHash('sha256')
          .update(hashedDocumentV1(row, seq, head.hash!))
          .digest('hex')
        await sql`update audit_log set seq = ${seq}, prev_hash = ${head.hash}, hash = ${hash} where id = ${row.id}`.execute(
          trx,
        )
      })
      assert.equal((await verifyAuditChain(db)).ok, true, 'a v1 row verifies')
      const res = await plinth.app.inject({
        method: 'DELETE',
        url: `/api/v1/admin/users/${other.userId}`,
        headers: bearer(admin.token),
      })
      assert.equal(res.statusCode, 200, res.body)
      await plinth.context.audit.seal()
      const report = await verifyAuditChain(db)
      assert.equal(report.ok, true, report.failure?.message)
      assert.equal(report.unverifiable, 1)
      assert.deepEqual(await tablesContaining(plinth, other.userId), {})
      assert.deepEqual(await tablesContaining(plinth, '198.51.100.9'), {})
    })
  })
}

describe('plinth privacy on postgres', { skip: await skipUnlessPostgres() }, () => {
  let plinth: TestPlinth
  let env: Record<string, string>
  let admin: Session
  before(async () => {
    // The command line builds its own instance: it must unwrap the same data keys.
    plinth = await startTestPlinth({
      backend: 'postgres',
      env: { ...PRIVACY_ENV, PLINTH_MASTER_KEY: TEST_MASTER_KEY },
    })
    env = {
      PLINTH_ENV: 'test',
      PLINTH_LOG_LEVEL: 'silent',
      DATABASE_URL: plinth.config.databaseUrl!,
      PLINTH_MASTER_KEY: TEST_MASTER_KEY,
    }
    admin = await createUser(plinth, uniqueEmail('admin'), 'admin')
  })
  after(() => plinth?.close())

  it('exports as JSON and erases with --yes, by id or address; refuses wrong arguments (exit 2)', async () => {
    const person = await buildPerson(plinth, admin)
    let r = await spawnCli(['privacy', 'export', '--user', person.email.toUpperCase()], env)
    assert.equal(r.code, 0, r.err)
    const exported = JSON.parse(r.out)
    assert.equal(exported.subject.userId, person.userId)
    assert.ok(
      exported.tables.some(
        (t: { table: string; rows: unknown[] }) => t.table === 'sessions' && t.rows.length > 0,
      ),
    )

    for (const [argv, pattern] of [
      [['privacy'], /missing action/],
      [['privacy', 'forget', '--user', person.email], /unknown action "forget"/],
      [['privacy', 'erase'], /--user needs a user id or an e-mail address/],
      [['privacy', 'erase', '--user', person.email], /cannot be undone: add --yes/],
      [['privacy', 'export', '--user', person.email, '--yes'], /--yes goes with "erase"/],
    ] as const) {
      r = await spawnCli([...argv], env)
      assert.equal(r.code, 2, `${argv.join(' ')}: ${r.err}`)
      assert.match(r.err, pattern)
    }
    r = await spawnCli(['privacy', 'erase', '--user', 'nobody@example.com', '--yes'], env)
    assert.equal(r.code, 1)
    assert.match(r.err, /PLINTH_USER_NOT_FOUND/)

    r = await spawnCli(['privacy', 'erase', '--user', person.userId, '--yes'], env)
    assert.equal(r.code, 0, r.err)
    assert.match(
      r.out,
      new RegExp(`^erased user ${person.userId}; audit rows now name erased:[0-9a-f]{32}$`, 'm'),
    )
    await plinth.context.audit.seal()
    assert.deepEqual(await traces(plinth, person), {})
    const record = await plinth.db.kysely
      .selectFrom('audit_log')
      .select(['actor_type', 'details'])
      .where('action', '=', 'user:erased')
      .where('outcome', '=', 'success')
      .executeTakeFirstOrThrow()
    assert.equal(record.actor_type, 'system')
    assert.equal((record.details as { by: string }).by, 'cli')
    r = await spawnCli(['audit', 'verify'], env)
    assert.equal(r.code, 0, r.err)
    assert.match(r.out, /^\d+ row\(s\) pseudonymised by erasure$/m)
  })
})
