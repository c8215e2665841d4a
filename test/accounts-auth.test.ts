import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { hashSecret } from '../src/modules/accounts/secrets.ts'
import {
  bearer,
  login,
  loginResponse,
  median,
  NO_RATE_LIMITS,
  PASSWORD,
  recordEvents,
  sessionCookieOf,
  signUp,
  uniqueEmail,
} from './helpers/accounts.ts'
import { assertProblem } from './helpers/assert-problem.ts'
import { movableClock } from './helpers/clock.ts'
import { skipUnlessPostgres } from './helpers/services.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'

const SESSION_TOKEN = /^pls_[A-Za-z0-9_-]{43}$/
const UA = 'accounts-auth-test/1'
const withoutRequest = (body: Record<string, unknown>) => ({ ...body, requestId: undefined })

describe('accounts: sign-up and sign-in on postgres', { skip: await skipUnlessPostgres() }, () => {
  let plinth: TestPlinth
  const clock = movableClock()
  before(async () => {
    plinth = await startTestPlinth({ backend: 'postgres', env: NO_RATE_LIMITS, now: clock.now })
  })
  after(() => plinth?.close())

  const failures = async (email: string) =>
    (
      await plinth.db.kysely
        .selectFrom('users')
        .select('failed_logins')
        .where('email_normalized', '=', email)
        .executeTakeFirstOrThrow()
    ).failed_logins

  it('open sign-up creates a member, signs them in and records who, from where', async () => {
    const rec = recordEvents(plinth)
    const email = uniqueEmail('open')
    const res = await plinth.app.inject({
      method: 'POST',
      url: '/api/v1/auth/signup',
      headers: { 'user-agent': UA },
      payload: { email, password: PASSWORD },
    })
    assert.equal(res.statusCode, 201, res.body)
    const body = res.json()
    assert.match(body.token, SESSION_TOKEN)
    assert.equal(typeof body.csrfToken, 'string')
    assert.equal(body.mfaEnrolmentRequired, false)
    assert.ok(sessionCookieOf(res)?.startsWith(`plinth_session=${body.token};`))
    const me = (await plinth.app.inject({ url: '/api/v1/me', headers: bearer(body.token) })).json()
    assert.equal(me.user.email, email)
    assert.equal(me.user.role, 'member')
    const [event] = (await rec.settled()).filter((e) => e.type === 'user:signed-up')
    rec.stop()
    assert.deepEqual(
      { ...event, at: undefined },
      {
        type: 'user:signed-up',
        outcome: 'success',
        actor: { type: 'user', id: me.user.id },
        target: { type: 'user', id: me.user.id },
        ip: '127.0.0.1',
        userAgent: UA,
        requestId: res.headers['x-request-id'],
        at: undefined,
      },
    )
  })

  it('signs in with the right password: a new session token in the body and an HttpOnly, SameSite=Lax cookie (not Secure in test)', async () => {
    const rec = recordEvents(plinth)
    const email = uniqueEmail('login')
    const first = await signUp(plinth.app, email)
    const res = await loginResponse(plinth.app, email, PASSWORD, { 'user-agent': UA })
    assert.equal(res.statusCode, 200, res.body)
    const body = res.json()
    assert.equal(body.mfaRequired, false)
    assert.match(body.token, SESSION_TOKEN)
    assert.notEqual(body.token, first.token, 'every sign-in issues a new token')
    const cookie = sessionCookieOf(res)!
    assert.ok(cookie.startsWith(`plinth_session=${body.token};`), cookie)
    assert.match(cookie, /; HttpOnly/)
    assert.match(cookie, /; SameSite=Lax/)
    assert.match(cookie, /; Path=\//)
    assert.doesNotMatch(cookie, /Secure/)
    const session = await plinth.db.kysely
      .selectFrom('sessions')
      .select('id')
      .where('token_hash', '=', hashSecret(body.token))
      .executeTakeFirstOrThrow()
    const [event] = (await rec.settled()).filter(
      (e) => e.type === 'login:succeeded' && e.actor.id === first.userId,
    )
    rec.stop()
    assert.deepEqual(
      { ...event, at: undefined },
      {
        type: 'login:succeeded',
        outcome: 'success',
        actor: { type: 'user', id: first.userId },
        target: { type: 'session', id: session.id },
        ip: '127.0.0.1',
        userAgent: UA,
        requestId: res.headers['x-request-id'],
        details: { method: 'password' },
        at: undefined,
      },
    )
  })

  it('answers a wrong password and an unknown address identically: 401 PLINTH_AUTH_INVALID_CREDENTIALS, same body', async () => {
    const rec = recordEvents(plinth)
    const email = uniqueEmail('enum')
    const { userId } = await signUp(plinth.app, email)
    const headers = { 'user-agent': UA }
    const wrongRes = await loginResponse(plinth.app, email, 'not-the-password-1', headers)
    const unknownRes = await loginResponse(plinth.app, uniqueEmail('nobody'), 'not-the-password-1', headers)
    const wrong = assertProblem(wrongRes, 401, 'PLINTH_AUTH_INVALID_CREDENTIALS')
    const unknown = assertProblem(unknownRes, 401, 'PLINTH_AUTH_INVALID_CREDENTIALS')
    assert.deepEqual(withoutRequest(unknown), withoutRequest(wrong))

    const failed = (await rec.settled()).filter((e) => e.type === 'login:failed')
    rec.stop()
    assert.deepEqual(
      failed.map((e) => [e.actor, e.outcome, e.ip, e.userAgent, e.requestId, e.details]),
      [
        [
          { type: 'user', id: userId },
          'failure',
          '127.0.0.1',
          UA,
          wrongRes.headers['x-request-id'],
          { failures: 1 },
        ],
        [
          { type: 'anonymous' },
          'failure',
          '127.0.0.1',
          UA,
          unknownRes.headers['x-request-id'],
          { failures: 1 },
        ],
      ],
    )
  })

  it('takes about as long for an unknown address as for a wrong password (one argon2 check each)', async () => {
    const email = uniqueEmail('timing')
    await signUp(plinth.app, email)
    await loginResponse(plinth.app, uniqueEmail('warm'), 'warm-up-password') // builds the dummy hash
    const time = async (fn: () => Promise<unknown>) => {
      const t = performance.now()
      await fn()
      return performance.now() - t
    }
    const known: number[] = []
    const unknown: number[] = []
    for (let i = 0; i < 7; i++) {
      known.push(await time(() => loginResponse(plinth.app, email, `wrong-password-${i}`)))
      unknown.push(await time(() => loginResponse(plinth.app, uniqueEmail('ghost'), `wrong-password-${i}`)))
      // Stay under the lockout threshold, so every attempt does the full check.
      await plinth.db.kysely
        .updateTable('users')
        .set({ failed_logins: 0 })
        .where('email_normalized', '=', email)
        .execute()
    }
    const ratio = median(unknown) / median(known)
    assert.ok(
      ratio > 0.5,
      `unknown/known median ratio ${ratio.toFixed(2)} (${median(unknown).toFixed(1)} vs ${median(known).toFixed(1)} ms)`,
    )
  })

  it('locks after 5 failures, even for the right password, with Retry-After; a success then resets the count', async () => {
    const rec = recordEvents(plinth)
    const email = uniqueEmail('lock')
    const { userId } = await signUp(plinth.app, email)
    for (let i = 0; i < 5; i++)
      assertProblem(
        await loginResponse(plinth.app, email, `bad-guess-${i}`),
        401,
        'PLINTH_AUTH_INVALID_CREDENTIALS',
      )
    const locked = await loginResponse(plinth.app, email, PASSWORD)
    assertProblem(locked, 429, 'PLINTH_AUTH_LOCKED')
    const retryAfter = Number(locked.headers['retry-after'])
    assert.ok(retryAfter >= 1 && retryAfter <= 2, `Retry-After ${retryAfter}`)
    assert.equal(sessionCookieOf(locked), undefined)
    clock.advance(retryAfter * 1000 + 50) // the lock runs out
    await login(plinth.app, email)
    assert.equal(await failures(email), 0)
    // Without the reset this sixth consecutive failure would lock again.
    assertProblem(
      await loginResponse(plinth.app, email, 'bad-guess-again'),
      401,
      'PLINTH_AUTH_INVALID_CREDENTIALS',
    )
    await login(plinth.app, email)

    const events = await rec.settled()
    rec.stop()
    const mine = events.filter((e) => e.actor.id === userId)
    const lockouts = mine.filter((e) => e.type === 'login:locked-out')
    assert.equal(lockouts.length, 1)
    assert.equal(lockouts[0]!.details?.failures, 5)
    assert.equal(mine.filter((e) => e.type === 'login:failed' && e.details?.reason === 'locked').length, 1)
    assert.equal(mine.filter((e) => e.type === 'login:succeeded').length, 2)
  })

  it('locks an unknown address exactly like a known one', async () => {
    const known = uniqueEmail('lock-known')
    await signUp(plinth.app, known)
    const unknown = uniqueEmail('lock-unknown')
    for (let i = 0; i < 5; i++) {
      await loginResponse(plinth.app, known, `bad-${i}`)
      assertProblem(
        await loginResponse(plinth.app, unknown, `bad-${i}`),
        401,
        'PLINTH_AUTH_INVALID_CREDENTIALS',
      )
    }
    const a = await loginResponse(plinth.app, known, PASSWORD)
    const b = await loginResponse(plinth.app, unknown, PASSWORD)
    const bodyA = assertProblem(a, 429, 'PLINTH_AUTH_LOCKED')
    const bodyB = assertProblem(b, 429, 'PLINTH_AUTH_LOCKED')
    assert.deepEqual(withoutRequest(bodyB), withoutRequest(bodyA))
    assert.equal(b.headers['retry-after'], a.headers['retry-after'])
  })
})

describe('accounts: the main path on the embedded database', () => {
  let plinth: TestPlinth
  before(async () => {
    plinth = await startTestPlinth({ backend: 'embedded', env: NO_RATE_LIMITS })
  })
  after(() => plinth?.close())

  it('signs up, reads /me by cookie, signs in again and out', async () => {
    const email = uniqueEmail('embedded')
    const first = await signUp(plinth.app, email)
    const me = await plinth.app.inject({ url: '/api/v1/me', headers: { cookie: first.cookie } })
    assert.equal(me.statusCode, 200)
    assert.equal(me.json().via, 'session')
    assert.equal(me.json().csrfToken, first.csrfToken)
    const second = await login(plinth.app, email)
    const out = await plinth.app.inject({
      method: 'POST',
      url: '/api/v1/auth/logout',
      headers: bearer(second.token),
    })
    assert.equal(out.statusCode, 204, out.body)
    assertProblem(
      await plinth.app.inject({ url: '/api/v1/me', headers: bearer(second.token) }),
      401,
      'PLINTH_AUTH_SESSION_EXPIRED',
    )
    assert.equal(
      (await plinth.app.inject({ url: '/api/v1/me', headers: bearer(first.token) })).statusCode,
      200,
    )
  })
})
