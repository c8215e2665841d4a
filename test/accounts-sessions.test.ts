import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { after, before, describe, it } from 'node:test'
import type { InjectOptions } from 'fastify'
import { hashSecret } from '../src/modules/accounts/secrets.ts'
import {
  bearer,
  cookieFor,
  login,
  loginResponse,
  meStatus,
  NO_RATE_LIMITS,
  OTHER_PASSWORD,
  PASSWORD,
  recordEvents,
  type Session,
  sessionCookieOf,
  signUp,
  uniqueEmail,
  viaCookie,
} from './helpers/accounts.ts'
import { assertProblem } from './helpers/assert-problem.ts'
import { skipUnlessPostgres } from './helpers/services.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'

describe('accounts: sessions on postgres', { skip: await skipUnlessPostgres() }, () => {
  let plinth: TestPlinth
  before(async () => {
    plinth = await startTestPlinth({ backend: 'postgres', env: NO_RATE_LIMITS })
  })
  after(() => plinth?.close())
  const inject = (opts: InjectOptions) => plinth.app.inject(opts)

  it('resolves /me by bearer and by cookie; the token carries 256 bits and only its hash is stored', async () => {
    const s = await signUp(plinth.app, uniqueEmail('me'))
    assert.match(s.token, /^pls_[A-Za-z0-9_-]{43}$/)
    const byBearer = (await inject({ url: '/api/v1/me', headers: bearer(s.token) })).json()
    const byCookie = (await inject({ url: '/api/v1/me', headers: { cookie: s.cookie } })).json()
    assert.equal(byBearer.user.id, s.userId)
    assert.equal(byCookie.user.id, s.userId)
    assert.equal(byCookie.csrfToken, s.csrfToken)
    const rows = await plinth.db.kysely
      .selectFrom('sessions')
      .selectAll()
      .where('user_id', '=', s.userId)
      .execute()
    assert.equal(rows.length, 1)
    assert.equal(rows[0]!.token_hash, hashSecret(s.token))
    assert.ok(!JSON.stringify(rows).includes(s.token.slice(4)), 'the sessions table holds the token')
  })

  it('changing the password rotates the session: a new token, the old one and every other session end', async () => {
    const rec = recordEvents(plinth)
    const email = uniqueEmail('rotate')
    const a = await signUp(plinth.app, email)
    const b = await login(plinth.app, email)
    const change = (
      s: Session,
      currentPassword: string,
      newPassword: string,
      headers: Record<string, string> = bearer(s.token),
    ) =>
      inject({
        method: 'POST',
        url: '/api/v1/me/password',
        headers,
        payload: { currentPassword, newPassword },
      })

    assertProblem(
      await change(a, 'wrong-current-password', OTHER_PASSWORD),
      401,
      'PLINTH_AUTH_INVALID_CREDENTIALS',
    )
    assertProblem(await change(a, PASSWORD, 'password1'), 422, 'PLINTH_AUTH_WEAK_PASSWORD')
    assertProblem(await change(a, PASSWORD, OTHER_PASSWORD, { cookie: a.cookie }), 403, 'PLINTH_AUTH_CSRF')
    const res = await change(a, PASSWORD, OTHER_PASSWORD)
    assert.equal(res.statusCode, 200, res.body)
    const rotated = res.json().token as string
    assert.notEqual(rotated, a.token)
    assert.ok(sessionCookieOf(res)?.startsWith(`plinth_session=${rotated};`))
    assertProblem(
      await inject({ url: '/api/v1/me', headers: bearer(a.token) }),
      401,
      'PLINTH_AUTH_SESSION_EXPIRED',
    )
    assert.equal(await meStatus(plinth.app, bearer(b.token)), 401)
    assert.equal(await meStatus(plinth.app, bearer(rotated)), 200)
    assertProblem(await loginResponse(plinth.app, email, PASSWORD), 401, 'PLINTH_AUTH_INVALID_CREDENTIALS')
    await login(plinth.app, email, OTHER_PASSWORD)

    const changed = (await rec.settled()).filter(
      (e) => e.type === 'password:changed' && e.actor.id === a.userId,
    )
    rec.stop()
    assert.deepEqual(
      changed.map((e) => e.outcome),
      ['failure', 'success'],
    )
    assert.equal(changed[1]!.requestId, res.headers['x-request-id'])
    assert.deepEqual(changed[1]!.target, { type: 'user', id: a.userId })
  })

  it('lists my sessions (the current one flagged), revokes one at once, then every other one', async () => {
    const rec = recordEvents(plinth)
    const email = uniqueEmail('list')
    const one = await signUp(plinth.app, email)
    const two = await login(plinth.app, email)
    const three = await login(plinth.app, email)
    const stranger = await signUp(plinth.app, uniqueEmail('stranger'))

    const list = await inject({ url: '/api/v1/me/sessions', headers: bearer(one.token) })
    const sessions = list.json().sessions as { id: string; current: boolean; ip: string }[]
    assert.equal(sessions.length, 3)
    assert.equal(sessions.filter((s) => s.current).length, 1)
    for (const s of [one, two, three]) assert.ok(!list.body.includes(s.token))
    const ids = await plinth.db.kysely
      .selectFrom('sessions')
      .select(['id', 'token_hash'])
      .where('user_id', '=', one.userId)
      .execute()
    const idOf = (s: Session) => ids.find((r) => r.token_hash === hashSecret(s.token))!.id
    assert.equal(sessions.find((s) => s.current)!.id, idOf(one))

    const revokeOne = (id: string, s: Session) =>
      inject({ method: 'DELETE', url: `/api/v1/me/sessions/${id}`, headers: bearer(s.token) })
    assert.equal((await revokeOne(idOf(two), one)).statusCode, 204)
    assert.equal(await meStatus(plinth.app, bearer(two.token)), 401, 'a revoked session must stop at once')
    assertProblem(await revokeOne(idOf(two), one), 404, 'PLINTH_RESOURCE_NOT_FOUND')
    assertProblem(await revokeOne(idOf(three), stranger), 404, 'PLINTH_RESOURCE_NOT_FOUND')
    assert.equal(await meStatus(plinth.app, bearer(three.token)), 200)

    const others = await inject({ method: 'DELETE', url: '/api/v1/me/sessions', headers: bearer(one.token) })
    assert.deepEqual(others.json(), { revoked: 1 })
    assert.equal(await meStatus(plinth.app, bearer(three.token)), 401)
    assert.equal(await meStatus(plinth.app, bearer(one.token)), 200)

    const revoked = (await rec.settled()).filter(
      (e) => e.type === 'session:revoked' && e.actor.id === one.userId,
    )
    rec.stop()
    assert.deepEqual(revoked[0]!.target, { type: 'session', id: idOf(two) })
    assert.equal(revoked[1]!.details?.count, 1)
  })

  it('logout revokes the session and clears the cookie', async () => {
    const s = await signUp(plinth.app, uniqueEmail('logout'))
    const res = await inject({ method: 'POST', url: '/api/v1/auth/logout', headers: viaCookie(s) })
    assert.equal(res.statusCode, 204, res.body)
    const cleared = sessionCookieOf(res)!
    assert.match(cleared, /^plinth_session=;/)
    assert.match(cleared, /Expires=Thu, 01 Jan 1970|Max-Age=0/)
    assertProblem(
      await inject({ url: '/api/v1/me', headers: { cookie: s.cookie } }),
      401,
      'PLINTH_AUTH_SESSION_EXPIRED',
    )
  })

  it('cookie-authenticated changes need the X-CSRF-Token of that very session; bearer calls need none', async () => {
    const email = uniqueEmail('csrf')
    const mine = await signUp(plinth.app, email)
    const other = await login(plinth.app, email)
    const csrf = (await inject({ url: '/api/v1/me', headers: { cookie: mine.cookie } })).json().csrfToken
    const revokeOthers = (headers: Record<string, string>) =>
      inject({ method: 'DELETE', url: '/api/v1/me/sessions', headers })
    assertProblem(await revokeOthers({ cookie: mine.cookie }), 403, 'PLINTH_AUTH_CSRF')
    assertProblem(
      await revokeOthers({ cookie: mine.cookie, 'x-csrf-token': other.csrfToken }),
      403,
      'PLINTH_AUTH_CSRF',
    )
    assertProblem(await revokeOthers({ cookie: mine.cookie, 'x-csrf-token': 'x' }), 403, 'PLINTH_AUTH_CSRF')
    assertProblem(
      await inject({ method: 'POST', url: '/api/v1/auth/logout', headers: { cookie: mine.cookie } }),
      403,
      'PLINTH_AUTH_CSRF',
    )
    assert.equal(await meStatus(plinth.app, bearer(other.token)), 200, 'nothing was revoked')
    const ok = await revokeOthers({ cookie: mine.cookie, 'x-csrf-token': csrf })
    assert.deepEqual(ok.json(), { revoked: 1 })
    const again = await login(plinth.app, email)
    assert.deepEqual((await revokeOthers(bearer(again.token))).json(), { revoked: 1 })
  })

  it('refuses forged session cookies and bearers with 401 PLINTH_AUTH_SESSION_EXPIRED, echoing nothing', async () => {
    const s = await signUp(plinth.app, uniqueEmail('forge'))
    const created = await inject({
      method: 'POST',
      url: '/api/v1/me/tokens',
      headers: bearer(s.token),
      payload: { name: 'ci', scopes: ['self:read'] },
    })
    const apiToken = created.json().token as string
    const last = s.token.at(-1) === 'A' ? 'B' : 'A'
    const forgeries = {
      'a random pls_ token': `pls_${randomBytes(32).toString('base64url')}`,
      'a token with one character changed': `${s.token.slice(0, -1)}${last}`,
      'a token cut short': s.token.slice(0, -2),
      'a malformed value': 'pls_<script>alert(1)</script>',
      'an API token': apiToken,
      'a session token of another prefix': `plc_${s.token.slice(4)}`,
    }
    for (const [what, value] of Object.entries(forgeries)) {
      // A bearer of another prefix is not an account credential at all (PLINTH_OPS_TOKEN is one too).
      const ways = value.startsWith('pls_')
        ? [{ cookie: cookieFor(value) }, bearer(value)]
        : [{ cookie: cookieFor(value) }]
      for (const headers of ways) {
        for (const req of [
          { url: '/api/v1/me' },
          { method: 'DELETE' as const, url: '/api/v1/me/sessions', headers: { 'x-csrf-token': s.csrfToken } },
        ]) {
          const res = await inject({ ...req, headers: { ...req.headers, ...headers } })
          assertProblem(res, 401, 'PLINTH_AUTH_SESSION_EXPIRED')
          assert.ok(!res.body.includes(value), `${what}: the answer echoes the credential`)
        }
      }
    }
    // Public routes ignore a bad cookie.
    assert.equal(
      (await inject({ url: '/api/v1', headers: { cookie: cookieFor('pls_nonsense') } })).statusCode,
      200,
    )
    assert.equal(await meStatus(plinth.app, bearer(s.token)), 200)
  })
})
