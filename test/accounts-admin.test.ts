import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { after, before, describe, it } from 'node:test'
import { accountsServices } from '../src/modules/accounts/accounts.wiring.ts'
import { createUserDirect } from '../src/modules/accounts/bootstrap-admin.ts'
import {
  bearer,
  createUser,
  login,
  loginResponse,
  meStatus,
  NO_RATE_LIMITS,
  PASSWORD,
  recordEvents,
  type Session,
  uniqueEmail,
  waitFor,
} from './helpers/accounts.ts'
import { runScenarios } from './helpers/api-scenario.ts'
import { assertProblem } from './helpers/assert-problem.ts'
import { captureLogs } from './helpers/log-capture.ts'
import { skipUnlessPostgres } from './helpers/services.ts'
import { testConfig } from './helpers/test-config.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'

describe('account administration on PostgreSQL', { skip: await skipUnlessPostgres() }, () => {
  let plinth: TestPlinth
  let logs: ReturnType<typeof captureLogs>
  let admin: Session
  let operator: Session
  let member: Session
  const adminEmail = uniqueEmail('admin')

  before(async () => {
    logs = captureLogs(testConfig(), 'info')
    plinth = await startTestPlinth({
      backend: 'postgres',
      logger: logs.logger,
      env: { ...NO_RATE_LIMITS, PLINTH_SIGNUP_MODE: 'invite' },
    })
    admin = await createUser(plinth, adminEmail, 'admin')
    operator = await createUser(plinth, uniqueEmail('operator'), 'operator')
    member = await createUser(plinth, uniqueEmail('member'), 'member')
  })
  after(() => plinth?.close())

  const call = (method: string, url: string, as: Session | undefined, payload?: unknown) =>
    plinth.app.inject({
      method: method as 'GET',
      url: `/api/v1${url}`,
      headers: as ? bearer(as.token) : {},
      ...(payload === undefined ? {} : { payload: payload as object }),
    })
  const patch = (id: string, change: Record<string, string>, as = admin) =>
    call('PATCH', `/admin/users/${id}`, as, change)

  it('lists users filtered by role, status and e-mail, in stable pages, without secrets', async () => {
    const tag = `list${Date.now()}`
    for (const role of ['viewer', 'viewer', 'member'] as const)
      await createUser(plinth, `${tag}-${randomUUID().slice(0, 6)}@Example.com`, role)
    const list = async (query: string) => {
      const res = await call('GET', `/admin/users?${query}`, admin)
      assert.equal(res.statusCode, 200, res.body)
      return (res.json() as { users: { id: string; email: string; role: string }[] }).users
    }
    const tagged = await list(`email=${tag.toUpperCase()}`)
    assert.equal(tagged.length, 3)
    const fields = 'createdAt,email,id,lastLoginAt,locked,mfaEnabled,role,status'
    assert.equal(Object.keys(tagged[0]!).sort().join(), fields)
    const roles = (await list(`email=${tag}&role=viewer`)).map((u) => u.role)
    assert.deepEqual(roles, ['viewer', 'viewer'])
    assert.equal((await patch(tagged[0]!.id, { status: 'disabled' })).statusCode, 200)
    assert.deepEqual(await list(`email=${tag}&status=disabled`), [{ ...tagged[0]!, status: 'disabled' }])
    assert.equal((await list(`email=${tag}&status=active`)).length, 2)
    const page = (await list(`email=${tag}&limit=2&offset=1`)).map((u) => u.email)
    assert.deepEqual(
      page,
      tagged.slice(1, 3).map((u) => u.email),
    )
    // LIKE wildcards are matched literally.
    assert.deepEqual(await list('email=%25'), [])
    assert.equal((await list('role=admin')).length, 1)
    assertProblem(await call('GET', '/admin/users?limit=1000', admin), 400, 'PLINTH_HTTP_INVALID_REQUEST')
  })

  it('creates a user with a password (201), stored whole as an argon2id hash, who can then sign in', async () => {
    const email = uniqueEmail('created')
    // 100 characters: a hash that cut passwords short (bcrypt stops at 72 bytes) would accept the variant.
    const long = `${PASSWORD}-${'q7'.repeat(37)}`
    const res = await call('POST', '/admin/users', admin, { email, role: 'viewer', password: long })
    assert.equal(res.statusCode, 201, res.body)
    assert.equal(res.json().role, 'viewer')
    const row = await plinth.db.kysely
      .selectFrom('users')
      .select('password_hash')
      .where('id', '=', res.json().id)
      .executeTakeFirstOrThrow()
    assert.match(row.password_hash ?? '', /^\$argon2id\$v=19\$m=19456,p=1,t=2\$[A-Za-z0-9+/]{22}\$/)
    assert.equal((await login(plinth.app, email, long)).userId, res.json().id)
    assert.equal((await loginResponse(plinth.app, email, `${long.slice(0, -1)}x`)).statusCode, 401)
    const again = await call('POST', '/admin/users', admin, { email, role: 'viewer', password: PASSWORD })
    assertProblem(again, 409, 'PLINTH_USER_EXISTS')
    const weak = await call('POST', '/admin/users', admin, {
      email: uniqueEmail(),
      role: 'viewer',
      password: 'password',
    })
    assertProblem(weak, 422, 'PLINTH_AUTH_WEAK_PASSWORD')
  })

  it('invites a user without a password (202): the e-mailed link signs them up with the invited role', async () => {
    const email = uniqueEmail('invited')
    const res = await call('POST', '/admin/users', admin, { email, role: 'operator' })
    assert.equal(res.statusCode, 202, res.body)
    assert.ok(Date.parse(res.json().expiresAt) > Date.now())
    const mail = await waitFor('the invitation e-mail', async () =>
      logs.lines().find((l) => l.msg === 'mail captured (no SMTP_URL)' && l.to === email),
    )
    const inviteToken = decodeURIComponent(/[?&]invite=([^&\s]+)/.exec(String(mail.text))![1]!)
    const signup = (extra: Record<string, unknown>) =>
      plinth.app.inject({
        method: 'POST',
        url: '/api/v1/auth/signup',
        payload: { email, password: PASSWORD, ...extra },
      })
    assertProblem(await signup({}), 403, 'PLINTH_AUTH_SIGNUP_CLOSED')
    const created = await signup({ inviteToken })
    assert.equal(created.statusCode, 201, created.body)
    const me = await plinth.app.inject({ url: '/api/v1/me', headers: bearer(created.json().token) })
    assert.equal(me.json().user.role, 'operator')
    assertProblem(await signup({ inviteToken }), 400, 'PLINTH_AUTH_TOKEN_INVALID')
  })

  it('changing a role ends the user’s sessions and emits user:role-changed with from and to', async () => {
    const user = await createUser(plinth, uniqueEmail('promoted'), 'member')
    const recorder = recordEvents(plinth)
    const res = await patch(user.userId, { role: 'operator' })
    assert.equal(res.statusCode, 200, res.body)
    assert.equal(res.json().role, 'operator')
    assertProblem(await call('GET', '/me', user), 401, 'PLINTH_AUTH_SESSION_EXPIRED')
    await recorder.settled()
    recorder.stop()
    const [event] = recorder.of('user:role-changed')
    assert.deepEqual(event?.details, { from: 'member', to: 'operator' })
    assert.deepEqual(event?.actor, { type: 'user', id: admin.userId })
    assert.deepEqual(event?.target, { type: 'user', id: user.userId })
    const fresh = await login(
      plinth.app,
      (
        await plinth.app.inject({ url: `/api/v1/admin/users/${user.userId}`, headers: bearer(admin.token) })
      ).json().email,
    )
    assert.equal((await call('GET', '/admin/users', fresh)).statusCode, 200)
  })

  it('a demoted user’s API token loses the old role’s rights at once', async () => {
    const email = uniqueEmail('demoted')
    const user = await createUser(plinth, email, 'operator')
    const created = await call('POST', '/me/tokens', user, {
      name: 'ci',
      scopes: ['users:read', 'self:read'],
    })
    assert.equal(created.statusCode, 201, created.body)
    const token = { token: created.json().token } as Session
    assert.equal((await call('GET', '/admin/users', token)).statusCode, 200)
    assert.equal((await patch(user.userId, { role: 'member' })).statusCode, 200)
    assertProblem(await call('GET', '/admin/users', token), 403, 'PLINTH_AUTH_FORBIDDEN')
    assert.equal((await call('GET', '/me', token)).statusCode, 200)
  })

  it('disabling ends sessions and API tokens, and sign-in answers as for a wrong password; re-enabling restores sign-in', async () => {
    const email = uniqueEmail('disabled')
    const user = await createUser(plinth, email, 'member')
    const token = (await call('POST', '/me/tokens', user, { name: 'cli', scopes: ['self:read'] })).json()
      .token
    assert.equal(await meStatus(plinth.app, bearer(token)), 200)
    const res = await patch(user.userId, { status: 'disabled' })
    assert.equal(res.json().status, 'disabled')
    assert.equal(await meStatus(plinth.app, bearer(user.token)), 401)
    assert.equal(await meStatus(plinth.app, bearer(token)), 401)
    const strip = (b: Record<string, unknown>) => ({ ...b, requestId: undefined, instance: undefined })
    const right = assertProblem(
      await loginResponse(plinth.app, email),
      401,
      'PLINTH_AUTH_INVALID_CREDENTIALS',
    )
    const wrong = assertProblem(
      await loginResponse(plinth.app, email, 'not-the-password-1'),
      401,
      'PLINTH_AUTH_INVALID_CREDENTIALS',
    )
    assert.deepEqual(strip(right), strip(wrong))
    assert.equal((await patch(user.userId, { status: 'active' })).json().status, 'active')
    await login(plinth.app, email)
    assert.equal(await meStatus(plinth.app, bearer(token)), 401, 'a token revoked on disabling stays revoked')
  })

  it('refuses to demote or disable the last active administrator, counting only active ones', async () => {
    for (const change of [{ role: 'operator' }, { status: 'disabled' }] as Record<string, string>[])
      assertProblem(await patch(admin.userId, change), 409, 'PLINTH_USER_LAST_ADMIN')
    const second = await createUser(plinth, uniqueEmail('admin2'), 'admin')
    assert.equal((await patch(second.userId, { status: 'disabled' })).statusCode, 200)
    assertProblem(await patch(admin.userId, { role: 'member' }), 409, 'PLINTH_USER_LAST_ADMIN')
    assert.equal(
      (await patch(second.userId, { role: 'member' })).statusCode,
      200,
      'a disabled admin may be demoted',
    )
    assert.equal(await meStatus(plinth.app, bearer(admin.token)), 200)
  })

  it('two administrators demoting each other at once leave one administrator', async () => {
    // Through the service, so that both checks really run side by side (over HTTP they rarely do).
    const service = accountsServices(plinth.context).admin
    const newAdmin = () =>
      createUserDirect(plinth.context, { email: uniqueEmail('rival'), password: PASSWORD, role: 'admin' })
    let survivor = admin.userId
    for (let round = 0; round < 3; round++) {
      const [a, b] = [await newAdmin(), await newAdmin()]
      await service.update(a, survivor, { role: 'operator' }, {})
      const results = await Promise.allSettled([
        service.update(a, b, { role: 'member' }, {}),
        service.update(b, a, { status: 'disabled' }, {}),
      ])
      assert.deepEqual(results.map((r) => r.status).sort(), ['fulfilled', 'rejected'])
      const refused = results.find((r) => r.status === 'rejected')
      assert.equal((refused?.reason as { code?: string } | undefined)?.code, 'PLINTH_USER_LAST_ADMIN')
      const admins = await plinth.db.kysely
        .selectFrom('users')
        .select('id')
        .where('role', '=', 'admin')
        .where('status', '=', 'active')
        .execute()
      survivor = results[0]!.status === 'fulfilled' ? a : b
      assert.deepEqual(admins, [{ id: survivor }])
    }
    await service.update(survivor, admin.userId, { role: 'admin' }, {})
    admin = await login(plinth.app, adminEmail)
  })

  it('unlock clears a lockout', async () => {
    const email = uniqueEmail('locked')
    const user = await createUser(plinth, email, 'member')
    await plinth.db.kysely
      .updateTable('users')
      .set({ locked_until: new Date(Date.now() + 3_600_000), failed_logins: 9 })
      .where('id', '=', user.userId)
      .execute()
    assertProblem(await loginResponse(plinth.app, email), 429, 'PLINTH_AUTH_LOCKED')
    assert.equal((await call('GET', `/admin/users/${user.userId}`, admin)).json().locked, true)
    assert.equal((await call('POST', `/admin/users/${user.userId}/unlock`, admin)).statusCode, 204)
    assert.equal((await call('GET', `/admin/users/${user.userId}`, operator)).json().locked, false)
    await login(plinth.app, email)
  })

  it('DELETE /admin/users/:id/sessions revokes every session of the user', async () => {
    const email = uniqueEmail('sessions')
    const first = await createUser(plinth, email, 'member')
    const second = await login(plinth.app, email)
    const res = await call('DELETE', `/admin/users/${first.userId}/sessions`, admin)
    assert.deepEqual(res.json(), { revoked: 2 })
    for (const s of [first, second]) assert.equal(await meStatus(plinth.app, bearer(s.token)), 401)
  })

  it('reads and sets the MFA policy; a role that requires MFA must enrol before anything else', async () => {
    const policy = await call('GET', '/admin/mfa-policy', operator)
    assert.deepEqual(policy.json(), { admin: false, operator: false, member: false, viewer: false })
    const set = await call('PUT', '/admin/mfa-policy', admin, { role: 'viewer', mfaRequired: true })
    assert.deepEqual(set.json(), { admin: false, operator: false, member: false, viewer: true })
    const viewer = await createUser(plinth, uniqueEmail('viewer'), 'viewer')
    assertProblem(await call('GET', '/me/sessions', viewer), 403, 'PLINTH_AUTH_MFA_ENROLMENT_REQUIRED')
    assert.equal((await call('GET', '/me', viewer)).json().mfaEnrolmentRequired, true)
    await call('PUT', '/admin/mfa-policy', admin, { role: 'viewer', mfaRequired: false })
    assert.equal((await call('GET', '/admin/mfa-policy', admin)).json().viewer, false)
  })

  const byId: [string, string, unknown?][] = [
    ['GET', ''],
    ['PATCH', '', { role: 'member' }],
    ['POST', '/unlock'],
    ['DELETE', '/sessions'],
  ]
  it('answers 404 PLINTH_USER_NOT_FOUND for unknown ids and 400 for ids that are not UUIDs', async () => {
    for (const [method, suffix, body] of byId) {
      assertProblem(
        await call(method, `/admin/users/${randomUUID()}${suffix}`, admin, body),
        404,
        'PLINTH_USER_NOT_FOUND',
      )
      assertProblem(
        await call(method, `/admin/users/42${suffix}`, admin, body),
        400,
        'PLINTH_HTTP_INVALID_REQUEST',
      )
    }
  })

  /** Every admin route: [method, url, body, needs users:manage]. */
  const adminRoutes = (id: string): [string, string, unknown, boolean][] => [
    ['GET', '/admin/users', undefined, false],
    ['GET', `/admin/users/${id}`, undefined, false],
    ['GET', '/admin/mfa-policy', undefined, false],
    ['POST', '/admin/users', { email: uniqueEmail(), role: 'member' }, true],
    ['POST', '/admin/invites', { email: uniqueEmail(), role: 'member' }, true],
    ...byId
      .slice(1)
      .map(([m, s, b]) => [m, `/admin/users/${id}${s}`, b, true] as [string, string, unknown, boolean]),
    ['PUT', '/admin/mfa-policy', { role: 'member', mfaRequired: true }, true],
  ]

  it('lets an operator read users but not manage them', async () => {
    await runScenarios(
      plinth.app,
      adminRoutes(member.userId).map(([method, url, body, manage]) => ({
        name: manage ? 'operator managing' : 'operator reading',
        method: method as 'GET',
        url: `/api/v1${url}`,
        headers: bearer(operator.token),
        body,
        ...(manage ? { expectStatus: 403, expectCode: 'PLINTH_AUTH_FORBIDDEN' } : { expectStatus: 200 }),
      })),
    )
  })

  it('refuses a member every admin route', async () => {
    await runScenarios(
      plinth.app,
      adminRoutes(member.userId).map(([method, url, body]) => ({
        name: 'member',
        method: method as 'GET',
        url: `/api/v1${url}`,
        headers: bearer(member.token),
        body,
        expectStatus: 403,
        expectCode: 'PLINTH_AUTH_FORBIDDEN',
      })),
    )
    assert.equal(await meStatus(plinth.app, bearer(member.token)), 200)
  })
})
