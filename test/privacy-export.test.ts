import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { sql } from 'kysely'
import { createPersonalDataRegistry, type PersonalDataTable } from '../src/core/privacy.ts'
import { bearer, createUser, type Session, uniqueEmail } from './helpers/accounts.ts'
import { assertProblem } from './helpers/assert-problem.ts'
import { buildPerson, type Person, PRIVACY_ENV } from './helpers/privacy.ts'
import { skipUnlessPostgres } from './helpers/services.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'

interface ExportedTable {
  module: string
  table: string
  description: string
  match: string
  columns: Record<string, { export: 'value' | 'presence' | 'omit'; note?: string }>
  rows: Record<string, unknown>[]
}
interface Exported {
  format: string
  generatedAt: string
  subject: { userId: string; email: string }
  tables: ExportedTable[]
}

/** Column names that refer to a person wherever they appear. */
const PERSONAL_NAME =
  /(^|_)(user_id|created_by|email|email_normalized|ip|user_agent|to_address|actor_id|target_id)$/

for (const backend of ['embedded', 'postgres'] as const) {
  describe(`privacy export on ${backend}`, {
    skip: backend === 'postgres' ? await skipUnlessPostgres() : false,
  }, () => {
    let plinth: TestPlinth
    let admin: Session
    let person: Person
    let exported: Exported
    let text: string

    before(async () => {
      plinth = await startTestPlinth({ backend, env: PRIVACY_ENV })
      admin = await createUser(plinth, uniqueEmail('admin'), 'admin')
      person = await buildPerson(plinth, admin)
      const res = await person.send({ url: '/api/v1/me/export', token: person.session.token })
      assert.equal(res.statusCode, 200, res.body)
      assert.match(
        String(res.headers['content-disposition']),
        /attachment; filename="plinth-personal-data\.json"/,
      )
      text = res.body
      exported = res.json() as Exported
    })
    after(() => plinth?.close())

    it('exports one document naming the person, with one section per registry entry, in order', () => {
      assert.equal(exported.format, 'plinth.personal-data/1')
      assert.deepEqual(exported.subject, { userId: person.userId, email: person.email })
      assert.deepEqual(
        exported.tables.map((t) => `${t.module}/${t.table}`),
        plinth.context.personalData.map((e) => `${e.module}/${e.table}`),
      )
    })

    it('holds a row of every registered table, and every declared personal column in it as declared', () => {
      plinth.context.personalData.forEach((entry, i) => {
        const t = exported.tables[i]!
        const where = `${entry.module}/${entry.table} (${t.match})`
        assert.ok(t.rows.length > 0, `${where}: the person has rows there, the export has none`)
        assert.deepEqual(Object.keys(t.columns).sort(), entry.columns.map((c) => c.name).sort(), where)
        for (const c of entry.columns) {
          assert.equal(t.columns[c.name]!.export, c.export, `${where}.${c.name}`)
          if (c.export === 'omit') {
            assert.ok(t.columns[c.name]!.note, `${where}.${c.name}: an omitted column says why`)
            for (const row of t.rows) assert.ok(!(c.name in row), `${where}.${c.name} is omitted`)
            continue
          }
          for (const row of t.rows) {
            assert.ok(c.name in row, `${where}: a row lacks the personal column ${c.name}`)
            if (c.export === 'presence') assert.equal(typeof row[c.name], 'boolean', `${where}.${c.name}`)
          }
        }
        for (const c of entry.context ?? [])
          for (const row of t.rows) assert.ok(c in row, `${where}: a row lacks ${c}`)
      })
    })

    it('shows the values that identify the person, and where the rows came from', () => {
      const rows = (table: string) => exported.tables.filter((t) => t.table === table).flatMap((t) => t.rows)
      assert.deepEqual(
        rows('users').map((r) => [r.id, r.email, r.role]),
        [[person.userId, person.email, 'admin']],
      )
      assert.ok(rows('sessions').some((r) => r.ip === person.ip && r.user_agent === person.userAgent))
      assert.ok(rows('login_challenges').some((r) => r.ip === person.ip))
      assert.ok(rows('api_tokens').some((r) => String(r.name).startsWith('laptop of')))
      assert.deepEqual(
        rows('totp_credentials').map((r) => [r.secret_ciphertext, r.confirmed_at !== null]),
        [[true, true]],
        'the second factor is there, its secret is not',
      )
      assert.equal(rows('recovery_codes').length, 10)
      const audit = rows('audit_log')
      for (const action of [
        'user:signed-up',
        'mfa:enrolled',
        'login:failed',
        'token:created',
        'invite:created',
      ])
        assert.ok(
          audit.some((r) => r.action === action),
          `audit ${action}`,
        )
      // An administrator's read of their account is there, without the administrator's address.
      const read = audit.find((r) => r.action === 'user:read')!
      assert.equal(read.target_id, person.userId)
      assert.deepEqual([read.actor_id, read.ip, read.user_agent], [null, null, null])
      assert.ok(audit.some((r) => r.actor_id === person.userId && r.ip === person.ip))
      const mail = rows('mail_outbox')
      assert.ok(mail.length >= 2)
      assert.ok(mail.some((r) => String(r.text_body).includes('[link secret removed]')))
      assert.ok(rows('plinth_jobs.job').some((r) => JSON.stringify(r.data).includes(person.userId)))
    })

    it('holds no credential: no token, no password or TOTP secret, no link secret', async () => {
      assert.doesNotMatch(text, /\bpl[a-z]_[A-Za-z0-9_-]{43}\b/, 'a session, API, invite or reset token')
      assert.ok(!text.includes(person.apiToken))
      assert.ok(!text.includes(person.session.token))
      assert.ok(!text.includes(person.totpSecret))
      assert.doesNotMatch(text, /\$argon2/)
      const { rows } = await sql<{ secret_ciphertext: string }>`select secret_ciphertext from totp_credentials
        where user_id = ${person.userId}`.execute(plinth.db.kysely)
      assert.ok(!text.includes(rows[0]!.secret_ciphertext))
    })

    it('declares every column that refers to people: user references, addresses, IPs and user agents', async () => {
      const db = plinth.db.kysely
      const { rows: named } = await sql<{ table_name: string; column_name: string }>`
        select table_name, column_name from information_schema.columns
        where table_schema = 'public' order by 1, 2`.execute(db)
      const { rows: references } = await sql<{ table_name: string; column_name: string }>`
        select cl.relname as table_name, a.attname as column_name
        from pg_constraint co
        join pg_class cl on cl.oid = co.conrelid
        join pg_namespace n on n.oid = cl.relnamespace
        join pg_attribute a on a.attrelid = co.conrelid and a.attnum = any(co.conkey)
        where co.contype = 'f' and co.confrelid = 'public.users'::regclass and n.nspname = 'public'`.execute(
        db,
      )
      const candidates = new Set([
        ...named
          .filter((c) => PERSONAL_NAME.test(c.column_name))
          .map((c) => `${c.table_name}.${c.column_name}`),
        ...references.map((c) => `${c.table_name}.${c.column_name}`),
      ])
      const declared = new Set(
        plinth.context.personalData.flatMap((e) => e.columns.map((c) => `${e.table}.${c.name}`)),
      )
      assert.ok(candidates.size >= 15, [...candidates].join(', '))
      assert.deepEqual(
        [...candidates].filter((c) => !declared.has(c)),
        [],
        'columns referring to people that no module declares in personalData',
      )
    })

    it('exports every column of a table whose rows are wholly about the person', async () => {
      const { rows } = await sql<{ table_name: string; column_name: string }>`
        select table_name, column_name from information_schema.columns where table_schema = 'public'`.execute(
        plinth.db.kysely,
      )
      const wholly = plinth.context.personalData.filter(
        (e) => 'column' in e.match && e.match.holds === 'user-id' && e.erase.action !== 'set-null',
      )
      assert.ok(wholly.length >= 7)
      for (const e of wholly) {
        const known = new Set([...e.columns.map((c) => c.name), ...(e.context ?? [])])
        const missing = rows.filter((r) => r.table_name === e.table && !known.has(r.column_name))
        assert.deepEqual(
          missing.map((r) => r.column_name),
          [],
          `${e.table}: columns neither personal nor context`,
        )
      }
    })

    it('lets an administrator export someone else, and records every export in the audit log', async () => {
      const res = await plinth.app.inject({
        url: `/api/v1/admin/users/${person.userId}/export`,
        headers: bearer(admin.token),
      })
      assert.equal(res.statusCode, 200, res.body)
      assert.equal((res.json() as Exported).subject.userId, person.userId)
      const operator = await createUser(plinth, uniqueEmail('operator'), 'operator')
      assertProblem(
        await plinth.app.inject({
          url: `/api/v1/admin/users/${person.userId}/export`,
          headers: bearer(operator.token),
        }),
        403,
        'PLINTH_AUTH_FORBIDDEN',
      )
      await plinth.context.audit.seal()
      const rows = await plinth.db.kysely
        .selectFrom('audit_log')
        .select(['actor_id', 'target_id'])
        .where('action', '=', 'privacy:exported')
        .execute()
      assert.deepEqual(rows.map((r) => r.actor_id).sort(), [admin.userId, person.userId].sort())
      assert.ok(rows.every((r) => r.target_id === person.userId))
    })
  })
}

describe('the personal data registry', () => {
  const ok: PersonalDataTable = {
    table: 'things',
    description: 'Things',
    match: { column: 'owner_id', holds: 'user-id' },
    columns: [{ name: 'owner_id', export: 'value' }],
    erase: { action: 'delete' },
  }
  const check = (e: Partial<PersonalDataTable>) => () =>
    createPersonalDataRegistry([{ name: 'm', personalData: [{ ...ok, ...e } as PersonalDataTable] }])

  it('refuses declarations export or erasure could not honour, naming them', () => {
    assert.doesNotThrow(check({}))
    assert.throws(check({ table: 'Things' }), /"Things" is not a lower-case table name/)
    assert.throws(
      check({ match: { column: 'user_id', holds: 'user-id' } }),
      /match column user_id must be one of its columns/,
    )
    assert.throws(
      check({
        columns: [
          { name: 'owner_id', export: 'value' },
          { name: 'secret', export: 'presence' },
        ],
      }),
      /secret \(presence\) needs a note/,
    )
    assert.throws(check({ context: ['owner_id'] }), /owner_id is both personal and context/)
    assert.throws(check({ match: { custom: 'somehow' } }), /custom match needs exportRows/)
    assert.throws(
      () =>
        createPersonalDataRegistry([
          { name: 'a', personalData: [ok] },
          { name: 'b', personalData: [ok] },
        ]),
      /things\.owner_id is declared twice/,
    )
  })
})
