import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import type { LightMyRequestResponse } from 'fastify'
import { sql } from 'kysely'
import type { SecurityEvent } from '../src/core/security-events.ts'
import type { AuditView } from '../src/modules/audit/audit-query.ts'
import {
  bearer,
  createUser,
  loginResponse,
  NO_RATE_LIMITS,
  recordEvents,
  type Session,
  signUp,
  uniqueEmail,
} from './helpers/accounts.ts'
import { assertProblem } from './helpers/assert-problem.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'

describe('the audit log over HTTP, and what the accounts module records in it', () => {
  let plinth: TestPlinth
  let admin: Session
  let operator: Session
  let member: Session

  before(async () => {
    plinth = await startTestPlinth({ env: { ...NO_RATE_LIMITS, PLINTH_SIGNUP_MODE: 'open' } })
    admin = await createUser(plinth, uniqueEmail('admin'), 'admin')
    operator = await createUser(plinth, uniqueEmail('operator'), 'operator')
    member = await createUser(plinth, uniqueEmail('member'), 'member')
  })
  after(() => plinth?.close())

  const call = (
    method: 'GET' | 'POST' | 'PATCH' | 'PUT' | 'DELETE',
    url: string,
    headers: Record<string, string>,
    payload?: object,
  ) =>
    plinth.app.inject({
      method,
      url: `/api/v1${url}`,
      headers: { 'user-agent': 'audit-test/1.0', ...headers },
      ...(payload ? { payload } : {}),
    })

  async function audit(
    query: string,
    as = admin,
  ): Promise<{ entries: AuditView[]; nextCursor: string | null }> {
    const res = await call('GET', `/audit?${query}`, bearer(as.token))
    assert.equal(res.statusCode, 200, res.body)
    return res.json()
  }
  const requestIdOf = (res: LightMyRequestResponse) => String(res.headers['x-request-id'])
  const byRequest = async (res: LightMyRequestResponse) =>
    (await audit(`requestId=${encodeURIComponent(requestIdOf(res))}`)).entries

  it('needs audit:read: a member is refused, an operator and an administrator read', async () => {
    assertProblem(await call('GET', '/audit', bearer(member.token)), 403, 'PLINTH_AUTH_FORBIDDEN')
    assertProblem(await call('GET', '/audit/export', bearer(member.token)), 403, 'PLINTH_AUTH_FORBIDDEN')
    assertProblem(await call('GET', '/audit', {}), 401, 'PLINTH_AUTH_REQUIRED')
    assert.ok((await audit('', operator)).entries.length > 0)
  })

  it('records a role change in its transaction: who, whom, from where, and the before/after diff', async () => {
    const target = await createUser(plinth, uniqueEmail('target'), 'member')
    const res = await call('PATCH', `/admin/users/${target.userId}`, bearer(admin.token), { role: 'viewer' })
    assert.equal(res.statusCode, 200, res.body)
    const [row, ...others] = await byRequest(res)
    assert.deepEqual(others, [])
    assert.equal(row!.action, 'user:role-changed')
    assert.deepEqual(row!.actor, { type: 'user', id: admin.userId, tokenId: null })
    assert.deepEqual(row!.target, { type: 'user', id: target.userId })
    assert.equal(row!.outcome, 'success')
    assert.equal(row!.ip, '127.0.0.1')
    assert.equal(row!.userAgent, 'audit-test/1.0')
    assert.deepEqual(row!.changes, { before: { role: 'member' }, after: { role: 'viewer' } })
    assert.deepEqual(row!.details, { sessionsEnded: 1 })
    assert.match(row!.hash, /^[0-9a-f]{64}$/)
    assert.match(row!.prevHash, /^[0-9a-f]{64}$/)
  })

  it('records the MFA policy change with its diff, and an API token as the actor when one is used', async () => {
    const created = await call('POST', '/me/tokens', bearer(admin.token), {
      name: 'automation',
      scopes: ['users:manage', 'users:read', 'audit:read'],
    })
    assert.equal(created.statusCode, 201, created.body)
    const { token, id: tokenId } = created.json() as { token: string; id: string }
    const [tokenRow] = await byRequest(created)
    assert.equal(tokenRow!.action, 'token:created')
    assert.deepEqual(tokenRow!.target, { type: 'api_token', id: tokenId })
    assert.equal(JSON.stringify(tokenRow).includes(token), false, 'never the secret')

    const res = await call('PUT', '/admin/mfa-policy', bearer(token), { role: 'viewer', mfaRequired: true })
    assert.equal(res.statusCode, 200, res.body)
    const [row] = await byRequest(res)
    assert.equal(row!.action, 'mfa:policy-changed')
    assert.deepEqual(row!.actor, { type: 'token', id: admin.userId, tokenId })
    assert.deepEqual(row!.target, { type: 'role', id: 'viewer' })
    assert.deepEqual(row!.changes, { before: { mfaRequired: false }, after: { mfaRequired: true } })
    const back = await call('PUT', '/admin/mfa-policy', bearer(admin.token), {
      role: 'viewer',
      mfaRequired: false,
    })
    assert.deepEqual((await byRequest(back))[0]!.changes, {
      before: { mfaRequired: true },
      after: { mfaRequired: false },
    })

    const revoked = await call('DELETE', `/me/tokens/${tokenId}`, bearer(admin.token))
    assert.equal(revoked.statusCode, 204)
    assert.deepEqual(
      (await byRequest(revoked)).map((r) => [r.action, r.target.id]),
      [['token:revoked', tokenId]],
    )
  })

  it('records refused sign-ins on their own: the account when known, the address tried when not', async () => {
    const email = uniqueEmail('victim')
    await createUser(plinth, email, 'member')
    const wrong = await loginResponse(plinth.app, email, 'not-the-password-at-all')
    assert.equal(wrong.statusCode, 401)
    const [known] = await byRequest(wrong)
    assert.equal(known!.action, 'login:failed')
    assert.equal(known!.outcome, 'failure')
    assert.equal(known!.actor.type, 'user')
    assert.deepEqual(known!.target, { type: 'user', id: known!.actor.id })
    assert.deepEqual(known!.details, { failures: 1 })

    const stranger = uniqueEmail('nobody')
    const unknown = await loginResponse(plinth.app, stranger, 'not-the-password-at-all')
    const [row] = await byRequest(unknown)
    assert.equal(row!.action, 'login:failed')
    assert.deepEqual(row!.actor, { type: 'anonymous', id: null, tokenId: null })
    assert.deepEqual(row!.details, { failures: 1, email: stranger })
    assert.equal(JSON.stringify(row).includes('not-the-password'), false)
  })

  it('records an administrator reading or listing other people’s accounts, not one reading their own', async () => {
    const other = await call('GET', `/admin/users/${member.userId}`, bearer(admin.token))
    assert.equal(other.statusCode, 200)
    assert.deepEqual(
      (await byRequest(other)).map((r) => [r.action, r.target.id, r.actor.id]),
      [['user:read', member.userId, admin.userId]],
    )
    const own = await call('GET', `/admin/users/${admin.userId}`, bearer(admin.token))
    assert.deepEqual(await byRequest(own), [])
    const list = await call('GET', '/admin/users?role=member&limit=5', bearer(operator.token))
    const [listed] = await byRequest(list)
    assert.equal(listed!.action, 'user:listed')
    assert.deepEqual(listed!.details, {
      filter: { role: 'member', limit: 5, offset: 0 },
      count: (list.json() as { users: unknown[] }).users.length,
    })
  })

  it('persists every security event of a whole account flow, each with its request', async () => {
    const recorder = recordEvents(plinth)
    try {
      const email = uniqueEmail('flow')
      const s = await signUp(plinth.app, email)
      await call('POST', '/me/password', bearer(s.token), {
        currentPassword: 'wrong-password-here',
        newPassword: 'amber-lantern-quarry-77',
      })
      await call('DELETE', '/me/sessions', bearer(s.token))
      await call('POST', '/auth/password-reset', {}, { email })
      await call('POST', '/admin/invites', bearer(admin.token), {
        email: uniqueEmail('invitee'),
        role: 'viewer',
      })
      await call('POST', `/admin/users/${s.userId}/unlock`, bearer(admin.token))
      await call('DELETE', `/admin/users/${s.userId}/sessions`, bearer(admin.token))
      await call('PATCH', `/admin/users/${s.userId}`, bearer(admin.token), { status: 'disabled' })
      await call('POST', '/admin/users', bearer(admin.token), {
        email: uniqueEmail('made'),
        role: 'member',
        password: 'violet-kettle-harbour-42',
      })
      await call('POST', '/auth/logout', bearer(admin.token))
      admin = await createUser(plinth, uniqueEmail('admin'), 'admin')
    } finally {
      recorder.stop()
    }
    const events = (await recorder.settled()).filter((e) => e.requestId)
    assert.ok(events.length >= 10, `events: ${events.map((e) => e.type)}`)
    await plinth.context.audit.seal()
    const rows = await plinth.db.kysely.selectFrom('audit_log').selectAll().execute()
    const key = (r: { action: string; outcome: string; requestId: string | null; actorId: string | null }) =>
      `${r.action} ${r.outcome} ${r.requestId} ${r.actorId}`
    const recorded = new Set(
      rows.map((r) =>
        key({ action: r.action, outcome: r.outcome, requestId: r.request_id, actorId: r.actor_id }),
      ),
    )
    const missing = events.filter(
      (e: SecurityEvent) =>
        !recorded.has(
          key({ action: e.type, outcome: e.outcome, requestId: e.requestId!, actorId: e.actor.id ?? null }),
        ),
    )
    assert.deepEqual(
      missing.map((e) => e.type),
      [],
      'every emitted event has its audit row',
    )
    const types = new Set(events.map((e) => e.type))
    for (const type of [
      'user:signed-up',
      'login:succeeded',
      'password:changed',
      'session:revoked',
      'password:reset-requested',
      'invite:created',
      'user:enabled',
      'user:disabled',
      'user:created',
    ] as const)
      assert.ok(types.has(type), `the flow emitted ${type}`)
  })

  it('does not make a change whose audit row cannot be written', async () => {
    const target = await createUser(plinth, uniqueEmail('steady'), 'member')
    const db = plinth.db.kysely
    await sql`create function refuse_role_audit() returns trigger language plpgsql as $$
      begin raise exception 'audit storage refused'; end $$`.execute(db)
    await sql`create trigger refuse_role_audit before insert on audit_log for each row
      when (new.action = 'user:role-changed') execute function refuse_role_audit()`.execute(db)
    try {
      const res = await call('PATCH', `/admin/users/${target.userId}`, bearer(admin.token), {
        role: 'operator',
      })
      assert.equal(res.statusCode, 500)
    } finally {
      await sql`drop trigger refuse_role_audit on audit_log`.execute(db)
      await sql`drop function refuse_role_audit()`.execute(db)
    }
    const user = await call('GET', `/admin/users/${target.userId}`, bearer(admin.token))
    assert.equal((user.json() as { role: string }).role, 'member', 'the role did not change')
    assert.equal((await call('GET', '/me', bearer(target.token))).statusCode, 200, 'the sessions did not end')
  })

  describe('filters and paging', () => {
    const tag = `probe-${Date.now()}`
    let start: Date
    before(async () => {
      start = new Date()
      const { audit: log } = plinth.context
      const db = plinth.db.kysely
      for (let i = 0; i < 7; i++)
        await log.record(db, {
          action: i % 2 === 0 ? 'probe:created' : 'probe:deleted',
          actor: i < 5 ? { type: 'user', id: `${tag}-alice` } : { type: 'system' },
          target: { type: tag, id: String(i) },
          outcome: i === 3 ? 'failure' : 'success',
          requestId: `${tag}-${i % 3}`,
        })
    })
    const ids = (page: { entries: AuditView[] }) => page.entries.map((e) => String(e.target.id))

    it('filters by actor, actor type, action or noun:*, target, outcome, request id and time, newest first', async () => {
      assert.deepEqual(ids(await audit(`targetType=${tag}`)), ['6', '5', '4', '3', '2', '1', '0'])
      assert.deepEqual(ids(await audit(`targetType=${tag}&actor=${tag}-alice`)), ['4', '3', '2', '1', '0'])
      assert.deepEqual(ids(await audit(`targetType=${tag}&actorType=system`)), ['6', '5'])
      assert.deepEqual(ids(await audit(`targetType=${tag}&action=probe:deleted`)), ['5', '3', '1'])
      assert.deepEqual(ids(await audit(`targetType=${tag}&action=probe:*`)).length, 7)
      assert.deepEqual(ids(await audit(`targetType=${tag}&targetId=4`)), ['4'])
      assert.deepEqual(ids(await audit(`targetType=${tag}&outcome=failure`)), ['3'])
      assert.deepEqual(ids(await audit(`requestId=${tag}-1`)), ['4', '1'])
      assert.deepEqual(ids(await audit(`targetType=${tag}&from=${start.toISOString()}`)).length, 7)
      assert.deepEqual(ids(await audit(`targetType=${tag}&to=${start.toISOString()}`)), [])
      assert.deepEqual(
        ids(await audit(`targetType=${tag}&from=${new Date(Date.now() + 60_000).toISOString()}`)),
        [],
      )
    })

    it('pages newest first with nextCursor, every row once, and refuses a cursor it did not give', async () => {
      const seen: string[] = []
      let cursor: string | null = null
      let pages = 0
      do {
        const page = await audit(`targetType=${tag}&limit=3${cursor ? `&cursor=${cursor}` : ''}`)
        seen.push(...ids(page))
        cursor = page.nextCursor
        pages++
      } while (cursor)
      assert.equal(pages, 3)
      assert.deepEqual(seen, ['6', '5', '4', '3', '2', '1', '0'])
      for (const bad of [
        'not-a-cursor',
        ...['99999999999999999999', '9999999999999999999'].map((n) =>
          Buffer.from(`seq:${n}`).toString('base64url'),
        ),
      ])
        assertProblem(
          await call('GET', `/audit?cursor=${bad}`, bearer(admin.token)),
          400,
          'PLINTH_AUDIT_CURSOR_INVALID',
        )
      assertProblem(
        await call('GET', '/audit?action=DROP', bearer(admin.token)),
        400,
        'PLINTH_HTTP_INVALID_REQUEST',
      )
      assertProblem(
        await call('GET', '/audit?limit=501', bearer(admin.token)),
        400,
        'PLINTH_HTTP_INVALID_REQUEST',
      )
    })

    it('exports the filtered log as NDJSON, oldest first, and records the export', async () => {
      const res = await call('GET', `/audit/export?targetType=${tag}&outcome=success`, bearer(operator.token))
      assert.equal(res.statusCode, 200, res.body)
      assert.match(String(res.headers['content-type']), /^application\/x-ndjson/)
      assert.match(String(res.headers['content-disposition']), /attachment/)
      const lines = res.body
        .trimEnd()
        .split('\n')
        .map((l) => JSON.parse(l) as AuditView)
      assert.deepEqual(
        lines.map((l) => l.target.id),
        ['0', '1', '2', '4', '5', '6'],
      )
      assert.ok(lines.every((l) => /^[0-9a-f]{64}$/.test(l.hash) && l.prevHash.length === 64))
      const [row] = await byRequest(res)
      assert.equal(row!.action, 'audit:exported')
      assert.deepEqual(row!.details, { filters: { targetType: tag, outcome: 'success' } })
      assert.deepEqual(row!.actor, { type: 'user', id: operator.userId, tokenId: null })
    })

    it('records reads of the audit log itself', async () => {
      const res = await call('GET', `/audit?targetType=${tag}&limit=2`, bearer(operator.token))
      const [row] = await byRequest(res)
      assert.equal(row!.action, 'audit:read')
      assert.deepEqual(row!.details, { filters: { targetType: tag }, rows: 2 })
    })
  })
})
