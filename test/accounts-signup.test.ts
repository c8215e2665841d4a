import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import type { InjectOptions } from 'fastify'
import {
  bearer,
  createUser,
  invite,
  meStatus,
  NO_RATE_LIMITS,
  PASSWORD,
  type Session,
  sessionCookieOf,
  signUp,
  signUpResponse,
  uniqueEmail,
} from './helpers/accounts.ts'
import { assertProblem } from './helpers/assert-problem.ts'
import { PRODUCTION_ENV } from './helpers/production-env.ts'
import { skipUnlessPostgres } from './helpers/services.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'

describe('accounts: sign-up modes on postgres', { skip: await skipUnlessPostgres() }, () => {
  const started: TestPlinth[] = []
  after(() => Promise.all(started.map((p) => p.close())))
  const start = async (env: Record<string, string>) => {
    const p = await startTestPlinth({ backend: 'postgres', env })
    started.push(p)
    return p
  }

  it('invite mode: sign-up needs the invitation of that address, which works once and sets the role', async () => {
    const plinth = await start({ PLINTH_SIGNUP_MODE: 'invite' })
    const admin = await createUser(plinth, uniqueEmail('admin'), 'admin')
    const email = uniqueEmail('invitee')
    const token = await invite(plinth, admin, email, 'operator')
    const withInvite = (address: string, inviteToken: string) =>
      signUpResponse(plinth.app, address, PASSWORD, { inviteToken })

    assertProblem(await signUpResponse(plinth.app, email), 403, 'PLINTH_AUTH_SIGNUP_CLOSED')
    assertProblem(await withInvite(uniqueEmail('stranger'), token), 400, 'PLINTH_AUTH_TOKEN_INVALID')
    assertProblem(
      await withInvite(email, `${token.slice(0, -1)}${token.endsWith('A') ? 'B' : 'A'}`),
      400,
      'PLINTH_AUTH_TOKEN_INVALID',
    )
    const session = await signUp(plinth.app, email, PASSWORD, { inviteToken: token })
    const me = (await plinth.app.inject({ url: '/api/v1/me', headers: bearer(session.token) })).json()
    assert.equal(me.user.role, 'operator')
    assertProblem(await withInvite(email, token), 400, 'PLINTH_AUTH_TOKEN_INVALID')
  })

  it('closed mode: sign-up answers 403 PLINTH_AUTH_SIGNUP_CLOSED', async () => {
    const plinth = await start({ PLINTH_SIGNUP_MODE: 'closed' })
    assertProblem(await signUpResponse(plinth.app, uniqueEmail('closed')), 403, 'PLINTH_AUTH_SIGNUP_CLOSED')
  })

  it('in production the session cookie is Secure too', async () => {
    const plinth = await start({ ...PRODUCTION_ENV, PLINTH_SIGNUP_MODE: 'open' })
    const res = await signUpResponse(plinth.app, uniqueEmail('prod'))
    assert.equal(res.statusCode, 201, res.body)
    const cookie = sessionCookieOf(res)!
    assert.match(cookie, /; Secure/)
    assert.match(cookie, /; HttpOnly/)
    assert.match(cookie, /; SameSite=Lax/)
  })
})

describe('accounts: sign-up rules and hostile input on postgres', {
  skip: await skipUnlessPostgres(),
}, () => {
  let plinth: TestPlinth
  let s: Session
  before(async () => {
    plinth = await startTestPlinth({ backend: 'postgres', env: NO_RATE_LIMITS })
    s = await signUp(plinth.app, uniqueEmail('hostile'))
  })
  after(() => plinth?.close())
  it('refuses a second account for the same address, whatever its case, with 409 PLINTH_USER_EXISTS', async () => {
    const email = uniqueEmail('dup')
    await signUp(plinth.app, email)
    assertProblem(
      await signUpResponse(plinth.app, email, 'another-good-password-1'),
      409,
      'PLINTH_USER_EXISTS',
    )
    assertProblem(await signUpResponse(plinth.app, email.toUpperCase()), 409, 'PLINTH_USER_EXISTS')
  })

  for (const [why, password] of [
    ['shorter than 8 characters', 'k7#pQ2z'],
    ['on the common-passwords list', 'password1'],
    ['common, in another case', 'PassWord123'],
    ['longer than 128 characters', 'x'.repeat(129)],
    ['the e-mail address itself', 'same-as-email@example.com'],
  ] as const) {
    it(`refuses a password ${why} with 422 PLINTH_AUTH_WEAK_PASSWORD and creates nothing`, async () => {
      const email = why.startsWith('the e-mail') ? password : uniqueEmail('weak')
      const body = assertProblem(
        await signUpResponse(plinth.app, email, password),
        422,
        'PLINTH_AUTH_WEAK_PASSWORD',
      )
      assert.deepEqual(
        (body.errors as { field: string }[]).map((e) => e.field),
        ['password'],
      )
      const row = await plinth.db.kysely
        .selectFrom('users')
        .select('id')
        .where('email_normalized', '=', email.toLowerCase())
        .executeTakeFirst()
      assert.equal(row, undefined)
    })
  }

  type Request = InjectOptions
  const post = (path: string, payload: unknown, headers: Record<string, string> = {}): Request => ({
    method: 'POST',
    url: `/api/v1${path}`,
    payload: payload as string,
    headers,
  })
  const asMe = () => bearer(s.token)
  const email = 'someone@example.com'

  const refused: [string, () => Request, number, string][] = [
    [
      'malformed JSON',
      () => post('/auth/login', '{"email":', { 'content-type': 'application/json' }),
      400,
      'PLINTH_HTTP_MALFORMED_BODY',
    ],
    [
      'a body over PLINTH_BODY_LIMIT',
      () => post('/auth/signup', { email, password: 'x'.repeat(1_100_000) }),
      413,
      'PLINTH_HTTP_BODY_TOO_LARGE',
    ],
    [
      'text instead of JSON',
      () => post('/auth/login', 'email=a', { 'content-type': 'text/plain' }),
      415,
      'PLINTH_HTTP_UNSUPPORTED_MEDIA_TYPE',
    ],
    [
      'a session id that is no uuid',
      () => ({ method: 'DELETE', url: '/api/v1/me/sessions/1%20or%201=1', headers: asMe() }),
      400,
      'PLINTH_HTTP_INVALID_REQUEST',
    ],
  ]
  /** Bodies the schemas refuse (422 PLINTH_HTTP_VALIDATION_FAILED), and the field each names. */
  const invalid: [string, () => Request, string][] = [
    [
      'an unknown field (a role on sign-up)',
      () => post('/auth/signup', { email, password: PASSWORD, role: 'admin' }),
      'role',
    ],
    [
      'an unknown field on sign-in',
      () => post('/auth/login', { email, password: PASSWORD, remember: true }),
      'remember',
    ],
    [
      'an e-mail over 254 characters',
      () => post('/auth/login', { email: `${'a'.repeat(250)}@example.com`, password: PASSWORD }),
      'email',
    ],
    [
      'a password over 1024 characters',
      () => post('/auth/login', { email, password: 'p'.repeat(1025) }),
      'password',
    ],
    ['a number for the password', () => post('/auth/login', { email, password: 12345678 }), 'password'],
    ['an array for the e-mail', () => post('/auth/login', { email: [email], password: PASSWORD }), 'email'],
    ['null for the password', () => post('/auth/signup', { email, password: null }), 'password'],
    ['an object for the reset address', () => post('/auth/password-reset', { email: { $ne: '' } }), 'email'],
    [
      'an overlong challenge',
      () => post('/auth/mfa', { challenge: 'c'.repeat(201), code: '123456' }),
      'challenge',
    ],
    ['an overlong TOTP code', () => post('/auth/mfa', { challenge: 'plc_x', code: '1'.repeat(17) }), 'code'],
    [
      'an overlong token name',
      () => post('/me/tokens', { name: 'n'.repeat(101), scopes: ['self:read'] }, asMe()),
      'name',
    ],
    ['an unknown scope', () => post('/me/tokens', { name: 'n', scopes: ['root'] }, asMe()), 'scopes.0'],
    ['no scopes', () => post('/me/tokens', { name: 'n', scopes: [] }, asMe()), 'scopes'],
    [
      'an expiry that is no date',
      () => post('/me/tokens', { name: 'n', scopes: ['self:read'], expiresAt: 'soon' }, asMe()),
      'expiresAt',
    ],
  ]
  const cases = [
    ...refused,
    ...invalid.map(
      ([what, request, field]) => [what, request, 422, 'PLINTH_HTTP_VALIDATION_FAILED', field] as const,
    ),
  ]

  for (const [what, request, status, code, field] of cases) {
    it(`answers ${what} with ${status} ${code}${field ? ` naming ${field}` : ''}`, async () => {
      const body = assertProblem(await plinth.app.inject(request()), status, code)
      if (field) {
        const fields = (body.errors as { field: string }[]).map((e) => e.field)
        assert.ok(fields.includes(field), `errors name ${fields.join(', ')}`)
      }
      assert.equal(await meStatus(plinth.app, bearer(s.token)), 200, 'the server is unharmed')
    })
  }
})
