import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import type { InjectOptions } from 'fastify'
import { generateTotp } from '../src/modules/accounts/totp.ts'
import {
  bearer,
  createUser,
  enrolTotp,
  loginResponse,
  meStatus,
  NO_RATE_LIMITS,
  PASSWORD,
  recordEvents,
  type Session,
  sessionCookieOf,
  signUp,
  uniqueEmail,
} from './helpers/accounts.ts'
import { assertProblem } from './helpers/assert-problem.ts'
import { movableClock } from './helpers/clock.ts'
import { skipUnlessPostgres } from './helpers/services.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'

const STEP = 30_000
const RECOVERY_CODE = /^[0-9a-z]{4}(-[0-9a-z]{4}){3}$/

describe('accounts: TOTP second factor on postgres', { skip: await skipUnlessPostgres() }, () => {
  let plinth: TestPlinth
  const clock = movableClock()
  before(async () => {
    plinth = await startTestPlinth({ backend: 'postgres', env: NO_RATE_LIMITS, now: clock.now })
  })
  after(() => plinth?.close())
  const inject = (opts: InjectOptions) => plinth.app.inject(opts)
  const me = async (s: Session) => (await inject({ url: '/api/v1/me', headers: bearer(s.token) })).json()
  const challengeFor = async (email: string) => {
    const res = await loginResponse(plinth.app, email)
    assert.equal(res.statusCode, 200, res.body)
    return res.json().challenge as string
  }
  const answer = (challenge: string, factor: { code?: string; recoveryCode?: string }) =>
    inject({ method: 'POST', url: '/api/v1/auth/mfa', payload: { challenge, ...factor } })

  it('enrols: secret, otpauth URI and SVG QR code; the secret is stored encrypted for this user only; a first code confirms', async () => {
    const rec = recordEvents(plinth)
    const email = uniqueEmail('enrol')
    const s = await signUp(plinth.app, email)
    const other = await signUp(plinth.app, uniqueEmail('other'))
    const start = await inject({ method: 'POST', url: '/api/v1/me/mfa/totp', headers: bearer(s.token) })
    assert.equal(start.statusCode, 200, start.body)
    const { secret, otpauthUri, qrSvg } = start.json()
    assert.match(secret, /^[A-Z2-7]{32}$/)
    assert.equal(
      otpauthUri,
      `otpauth://totp/Plinth:${encodeURIComponent(email)}?secret=${secret}&issuer=Plinth`,
    )
    assert.match(qrSvg, /^<svg[\s\S]*<\/svg>\s*$/)

    const row = await plinth.db.kysely
      .selectFrom('totp_credentials')
      .selectAll()
      .where('user_id', '=', s.userId)
      .executeTakeFirstOrThrow()
    assert.ok(!JSON.stringify(row).includes(secret), 'the secret is stored in clear')
    const { keyring } = plinth.context
    assert.equal(keyring.decryptString(row.secret_ciphertext, `totp_credentials.secret:${s.userId}`), secret)
    assert.throws(
      () => keyring.decryptString(row.secret_ciphertext, `totp_credentials.secret:${other.userId}`),
      {
        code: 'PLINTH_CRYPTO_DECRYPT_FAILED',
      },
    )

    const confirm = (code: string) =>
      inject({
        method: 'POST',
        url: '/api/v1/me/mfa/totp/confirm',
        headers: bearer(s.token),
        payload: { code },
      })
    assertProblem(await confirm(generateTotp(secret, clock.now() + 3 * STEP)), 401, 'PLINTH_AUTH_MFA_INVALID')
    assert.equal((await me(s)).user.mfaEnabled, false)
    const ok = await confirm(generateTotp(secret, clock.now()))
    assert.equal(ok.statusCode, 200, ok.body)
    const body = ok.json()
    assert.equal(body.recoveryCodes.length, 10)
    for (const code of body.recoveryCodes) assert.match(code, RECOVERY_CODE)
    assert.notEqual(body.token, s.token)
    assert.ok(sessionCookieOf(ok)?.startsWith(`plinth_session=${body.token};`))
    assert.equal(await meStatus(plinth.app, bearer(s.token)), 401, 'the enrolling session is replaced')
    const after = await me({ ...s, token: body.token })
    assert.equal(after.user.mfaEnabled, true)
    assert.equal(after.recoveryCodesLeft, 10)
    const stored = JSON.stringify(await plinth.db.kysely.selectFrom('recovery_codes').selectAll().execute())
    for (const code of body.recoveryCodes)
      assert.ok(!stored.includes(code) && !stored.includes(code.replaceAll('-', '')))
    assertProblem(
      await inject({ method: 'POST', url: '/api/v1/me/mfa/totp', headers: bearer(body.token) }),
      409,
      'PLINTH_AUTH_MFA_ALREADY_ENABLED',
    )

    const events = (await rec.settled()).filter((e) => e.actor.id === s.userId && e.type.startsWith('mfa:'))
    rec.stop()
    assert.deepEqual(
      events.map((e) => [e.type, e.details?.during ?? e.details?.method]),
      [
        ['mfa:failed', 'enrolment'],
        ['mfa:enrolled', 'totp'],
      ],
    )
    assert.equal(events[1]!.requestId, ok.headers['x-request-id'])
    assert.deepEqual(events[1]!.target, { type: 'user', id: s.userId })
  })

  it('signing in then answers with a challenge and no session; a right code completes it, once', async () => {
    const email = uniqueEmail('signin')
    const { secret } = await enrolTotp(plinth.app, await signUp(plinth.app, email), clock.now)
    const res = await loginResponse(plinth.app, email)
    assert.equal(res.statusCode, 200, res.body)
    const body = res.json()
    assert.deepEqual(Object.keys(body).sort(), ['challenge', 'challengeExpiresAt', 'mfaRequired'])
    assert.equal(body.mfaRequired, true)
    assert.match(body.challenge, /^plc_[A-Za-z0-9_-]{43}$/)
    assert.equal(sessionCookieOf(res), undefined)
    assert.equal(await meStatus(plinth.app, bearer(body.challenge)), 401, 'a challenge is no session')

    const code = generateTotp(secret, clock.now())
    const done = await answer(body.challenge, { code })
    assert.equal(done.statusCode, 200, done.body)
    assert.equal(await meStatus(plinth.app, bearer(done.json().token)), 200)
    assert.ok(sessionCookieOf(done))
    assertProblem(
      await answer(body.challenge, { code: generateTotp(secret, clock.now() + STEP) }),
      401,
      'PLINTH_AUTH_MFA_CHALLENGE_EXPIRED',
    )

    const second = await challengeFor(email)
    assertProblem(await answer(second, { code }), 401, 'PLINTH_AUTH_MFA_INVALID') // replayed
    const next = await answer(second, { code: generateTotp(secret, clock.now() + STEP) }) // one step ahead: accepted
    assert.equal(next.statusCode, 200, next.body)
  })

  it('kills a challenge after 5 failures (codes two or more steps off are refused), even for a right code then, and locks the account like wrong passwords', async () => {
    const rec = recordEvents(plinth)
    const email = uniqueEmail('fail')
    const { secret, session } = await enrolTotp(plinth.app, await signUp(plinth.app, email), clock.now)
    const challenge = await challengeFor(email)
    const now = clock.now()
    // +3, not +2: should the server's clock enter the next step meanwhile, +2 would become +1.
    const wrong = [now + 3 * STEP, now - 2 * STEP, now + 4 * STEP, now - 3 * STEP].map((t) =>
      generateTotp(secret, t),
    )
    for (const code of [...wrong])
      assertProblem(await answer(challenge, { code }), 401, 'PLINTH_AUTH_MFA_INVALID')
    assertProblem(await answer(challenge, { code: 'abc123' }), 401, 'PLINTH_AUTH_MFA_CHALLENGE_EXPIRED')
    assertProblem(
      await answer(challenge, { code: generateTotp(secret, clock.now()) }),
      401,
      'PLINTH_AUTH_MFA_CHALLENGE_EXPIRED',
    )
    // Five wrong second factors count towards the account's lockout like wrong passwords.
    const locked = await loginResponse(plinth.app, email)
    assertProblem(locked, 429, 'PLINTH_AUTH_LOCKED')
    clock.advance(Number(locked.headers['retry-after']) * 1000 + 100) // the lock runs out
    const fresh = await answer(await challengeFor(email), { code: generateTotp(secret, clock.now()) })
    assert.equal(fresh.statusCode, 200, fresh.body)
    const failures = (await rec.settled()).filter(
      (e) => e.type === 'mfa:failed' && e.actor.id === session.userId,
    )
    rec.stop()
    assert.deepEqual(
      failures.map((e) => e.details?.failures),
      [1, 2, 3, 4, 5],
    )
  })

  it('a recovery code signs in once, typed in any case or grouping', async () => {
    const rec = recordEvents(plinth)
    const email = uniqueEmail('recovery')
    const { recoveryCodes, session } = await enrolTotp(plinth.app, await signUp(plinth.app, email), clock.now)
    const first = await answer(await challengeFor(email), { recoveryCode: recoveryCodes[0]! })
    assert.equal(first.statusCode, 200, first.body)
    assertProblem(
      await answer(await challengeFor(email), { recoveryCode: recoveryCodes[0]! }),
      401,
      'PLINTH_AUTH_MFA_INVALID',
    )
    const typed = recoveryCodes[1]!.replaceAll('-', ' ').toUpperCase()
    const second = await answer(await challengeFor(email), { recoveryCode: typed })
    assert.equal(second.statusCode, 200, second.body)
    assert.equal((await me({ ...session, token: second.json().token })).recoveryCodesLeft, 8)
    const events = await rec.settled()
    rec.stop()
    assert.equal(
      events.filter((e) => e.type === 'mfa:recovery-code-used' && e.actor.id === session.userId).length,
      2,
    )
    const logins = events.filter((e) => e.type === 'login:succeeded' && e.actor.id === session.userId)
    assert.deepEqual(
      logins.map((e) => e.details?.method),
      ['password+recovery', 'password+recovery'],
    )
  })

  it('disabling needs the password and a current code (401 for either wrong), then sign-in needs no code', async () => {
    const rec = recordEvents(plinth)
    const email = uniqueEmail('disable')
    const { secret, session } = await enrolTotp(plinth.app, await signUp(plinth.app, email), clock.now)
    const disable = (password: string, code: string) =>
      inject({
        method: 'DELETE',
        url: '/api/v1/me/mfa/totp',
        headers: bearer(session.token),
        payload: { password, code },
      })
    assertProblem(
      await disable('not-my-password-1', generateTotp(secret, clock.now())),
      401,
      'PLINTH_AUTH_INVALID_CREDENTIALS',
    )
    assertProblem(
      await disable(PASSWORD, generateTotp(secret, clock.now() + 3 * STEP)),
      401,
      'PLINTH_AUTH_MFA_INVALID',
    )
    assert.equal((await me(session)).user.mfaEnabled, true)
    const ok = await disable(PASSWORD, generateTotp(secret, clock.now()))
    assert.equal(ok.statusCode, 204, ok.body)
    assert.equal((await me(session)).user.mfaEnabled, false)
    const res = await loginResponse(plinth.app, email)
    assert.equal(res.json().mfaRequired, false)
    const rows = await plinth.db.kysely
      .selectFrom('recovery_codes')
      .select('id')
      .where('user_id', '=', session.userId)
      .execute()
    assert.equal(rows.length, 0)
    const events = (await rec.settled()).filter(
      (e) => e.actor.id === session.userId && e.type.startsWith('mfa:'),
    )
    rec.stop()
    assert.deepEqual(
      events.map((e) => [e.type, e.details?.during]),
      [
        ['mfa:enrolled', undefined],
        ['mfa:failed', 'disable'],
        ['mfa:failed', 'disable'],
        ['mfa:disabled', undefined],
      ],
    )
    assert.equal(events[3]!.requestId, ok.headers['x-request-id'])
  })

  it('with a role policy, a member of that role without TOTP must enrol before anything but /me, enrolment and logout', async () => {
    const admin = await createUser(plinth, uniqueEmail('admin'), 'admin')
    const policy = (mfaRequired: boolean) =>
      inject({
        method: 'PUT',
        url: '/api/v1/admin/mfa-policy',
        headers: bearer(admin.token),
        payload: { role: 'viewer', mfaRequired },
      })
    const set = await policy(true)
    assert.equal(set.statusCode, 200, set.body)
    assert.equal(set.json().viewer, true)
    try {
      const email = uniqueEmail('viewer')
      const pending = await createUser(plinth, email, 'viewer')
      const res = await loginResponse(plinth.app, email)
      assert.equal(res.json().mfaEnrolmentRequired, true)
      const other = res.json().token as string
      const view = await me(pending)
      assert.equal(view.mfaEnrolmentRequired, true)
      assertProblem(
        await inject({ url: '/api/v1/me/sessions', headers: bearer(pending.token) }),
        403,
        'PLINTH_AUTH_MFA_ENROLMENT_REQUIRED',
      )
      // The token listing stays readable: it shows which tokens the requirement holds back.
      assert.equal(
        (await inject({ url: '/api/v1/me/tokens', headers: bearer(pending.token) })).statusCode,
        200,
      )
      assertProblem(
        await inject({
          method: 'POST',
          url: '/api/v1/me/tokens',
          headers: bearer(pending.token),
          payload: { name: 'x', scopes: ['self:read'] },
        }),
        403,
        'PLINTH_AUTH_MFA_ENROLMENT_REQUIRED',
      )
      const out = await inject({ method: 'POST', url: '/api/v1/auth/logout', headers: bearer(other) })
      assert.equal(out.statusCode, 204, out.body)
      const enrolled = await enrolTotp(plinth.app, pending, clock.now)
      assert.equal(await meStatus(plinth.app, bearer(pending.token)), 401)
      assert.equal((await me(enrolled.session)).mfaEnrolmentRequired, false)
      const tokens = await inject({ url: '/api/v1/me/tokens', headers: bearer(enrolled.session.token) })
      assert.equal(tokens.statusCode, 200, tokens.body)
      assert.equal((await loginResponse(plinth.app, email)).json().mfaRequired, true)
    } finally {
      await policy(false)
    }
  })
})
