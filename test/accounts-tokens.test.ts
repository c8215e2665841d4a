import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { after, before, describe, it } from 'node:test'
import type { InjectOptions } from 'fastify'
import { MAX_TOKENS_PER_USER } from '../src/modules/accounts/api-tokens.service.ts'
import { hashSecret } from '../src/modules/accounts/secrets.ts'
import {
  bearer,
  createUser,
  meStatus,
  NO_RATE_LIMITS,
  PASSWORD,
  recordEvents,
  type Session,
  signUp,
  uniqueEmail,
} from './helpers/accounts.ts'
import { assertProblem } from './helpers/assert-problem.ts'
import { movableClock } from './helpers/clock.ts'
import { skipUnlessPostgres } from './helpers/services.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'

describe('accounts: API tokens on postgres', { skip: await skipUnlessPostgres() }, () => {
  let plinth: TestPlinth
  const clock = movableClock()
  before(async () => {
    plinth = await startTestPlinth({ backend: 'postgres', env: NO_RATE_LIMITS, now: clock.now })
  })
  after(() => plinth?.close())
  const inject = (opts: InjectOptions) => plinth.app.inject(opts)
  const createToken = (s: Session, payload: Record<string, unknown>, headers = bearer(s.token)) =>
    inject({ method: 'POST', url: '/api/v1/me/tokens', headers, payload })
  const listTokens = (s: Session) => inject({ url: '/api/v1/me/tokens', headers: bearer(s.token) })

  describe('API tokens', () => {
    it('shows a new token once (plt_ + 256 bits), stores its hash, lists its hint and when it was last used', async () => {
      const rec = recordEvents(plinth)
      const s = await signUp(plinth.app, uniqueEmail('tokens'))
      const res = await createToken(s, { name: 'deploy bot', scopes: ['self:read', 'files:read'] })
      assert.equal(res.statusCode, 201, res.body)
      const created = res.json()
      assert.match(created.token, /^plt_[A-Za-z0-9_-]{43}$/)
      assert.equal(created.hint, `${created.token.slice(0, 8)}…${created.token.slice(-4)}`)
      assert.equal(created.lastUsedAt, null)

      const me = await inject({ url: '/api/v1/me', headers: bearer(created.token) })
      assert.equal(me.statusCode, 200, me.body)
      assert.equal(me.json().via, 'token')
      assert.equal(me.json().csrfToken, null)

      const list = await listTokens(s)
      assert.ok(!list.body.includes(created.token) && !list.body.includes(created.token.slice(8, -4)))
      const [listed] = list.json().tokens
      const { token: _, ...shown } = created
      assert.deepEqual({ ...listed, lastUsedAt: null }, shown)
      assert.ok(Date.parse(listed.lastUsedAt) >= Date.parse(created.createdAt), 'last use is recorded')
      const row = await plinth.db.kysely
        .selectFrom('api_tokens')
        .selectAll()
        .where('id', '=', created.id)
        .executeTakeFirstOrThrow()
      assert.equal(row.token_hash, hashSecret(created.token))
      assert.ok(!JSON.stringify(row).includes(created.token.slice(8, -4)))

      const [event] = (await rec.settled()).filter(
        (e) => e.type === 'token:created' && e.actor.id === s.userId,
      )
      rec.stop()
      assert.deepEqual(event!.target, { type: 'api_token', id: created.id })
      assert.deepEqual(event!.details, { name: 'deploy bot', scopes: ['self:read', 'files:read'] })
      assert.equal(event!.requestId, res.headers['x-request-id'])
    })

    it('grants only scopes within the role: a member asking for users:manage gets 403 and no token', async () => {
      const s = await signUp(plinth.app, uniqueEmail('scopes'))
      const res = await createToken(s, { name: 'too much', scopes: ['self:read', 'users:manage'] })
      const body = assertProblem(res, 403, 'PLINTH_AUTH_FORBIDDEN')
      assert.match(String(body.detail), /users:manage/)
      assert.deepEqual((await listTokens(s)).json().tokens, [])
    })

    it('enforces scopes: a token does only what its scopes say, and never mints tokens or changes the password', async () => {
      const operator = await createUser(plinth, uniqueEmail('operator'), 'operator')
      const readOnly = (await createToken(operator, { name: 'ro', scopes: ['self:read'] })).json()
        .token as string
      const readWrite = (
        await createToken(operator, { name: 'rw', scopes: ['self:read', 'self:write'] })
      ).json().token as string
      const cases: [string, string, string, Record<string, unknown> | undefined, number][] = [
        [readOnly, 'GET', '/api/v1/me/tokens', undefined, 200],
        [readOnly, 'GET', '/api/v1/admin/users', undefined, 403], // the role has users:read, the token not
        [readOnly, 'DELETE', '/api/v1/me/sessions', undefined, 403],
        [readOnly, 'POST', '/api/v1/me/tokens', { name: 'x', scopes: ['self:read'] }, 403],
        [readWrite, 'POST', '/api/v1/me/tokens', { name: 'x', scopes: ['self:read'] }, 403],
        [
          readWrite,
          'POST',
          '/api/v1/me/password',
          { currentPassword: PASSWORD, newPassword: 'a-new-good-one-9' },
          403,
        ],
        [readWrite, 'POST', '/api/v1/me/mfa/totp', undefined, 403],
        [readWrite, 'DELETE', `/api/v1/me/tokens/${randomUUID()}`, undefined, 404], // allowed; bearer: no CSRF
      ]
      for (const [token, method, url, payload, status] of cases) {
        const res = await inject({
          method: method as 'GET',
          url,
          headers: bearer(token),
          ...(payload ? { payload } : {}),
        })
        assert.equal(res.statusCode, status, `${method} ${url}: ${res.body}`)
        if (status === 403) assert.equal(res.json().code, 'PLINTH_AUTH_FORBIDDEN')
        if (status === 404) assert.equal(res.json().code, 'PLINTH_RESOURCE_NOT_FOUND')
      }
      assert.equal((await listTokens(operator)).json().tokens.length, 2, 'no token was minted by a token')
    })

    it('refuses an expiry in the past with 422; a token that expires answers 401 afterwards', async () => {
      const s = await signUp(plinth.app, uniqueEmail('expiry'))
      const past = await createToken(s, {
        name: 'old',
        scopes: ['self:read'],
        expiresAt: new Date(clock.now() - 1000).toISOString(),
      })
      assertProblem(past, 422, 'PLINTH_HTTP_VALIDATION_FAILED')
      const res = await createToken(s, {
        name: 'brief',
        scopes: ['self:read'],
        expiresAt: new Date(clock.now() + 1000).toISOString(),
      })
      assert.equal(res.statusCode, 201, res.body)
      const token = res.json().token as string
      assert.equal(await meStatus(plinth.app, bearer(token)), 200)
      clock.advance(Date.parse(res.json().expiresAt) - clock.now() + 50) // the token runs out
      assertProblem(
        await inject({ url: '/api/v1/me', headers: bearer(token) }),
        401,
        'PLINTH_AUTH_SESSION_EXPIRED',
      )
    })

    it('revokes a token at once (401 after), only the owner can, and records it', async () => {
      const rec = recordEvents(plinth)
      const s = await signUp(plinth.app, uniqueEmail('revoke'))
      const stranger = await signUp(plinth.app, uniqueEmail('stranger'))
      const { id, token } = (await createToken(s, { name: 'temp', scopes: ['self:read'] })).json()
      assert.equal(await meStatus(plinth.app, bearer(token)), 200)
      const revoke = (by: Session) =>
        inject({ method: 'DELETE', url: `/api/v1/me/tokens/${id}`, headers: bearer(by.token) })
      assertProblem(await revoke(stranger), 404, 'PLINTH_RESOURCE_NOT_FOUND')
      assert.equal(await meStatus(plinth.app, bearer(token)), 200)
      assert.equal((await revoke(s)).statusCode, 204)
      assertProblem(
        await inject({ url: '/api/v1/me', headers: bearer(token) }),
        401,
        'PLINTH_AUTH_SESSION_EXPIRED',
      )
      assertProblem(await revoke(s), 404, 'PLINTH_RESOURCE_NOT_FOUND')
      assert.deepEqual((await listTokens(s)).json().tokens, [])
      const revoked = (await rec.settled()).filter((e) => e.type === 'token:revoked')
      rec.stop()
      assert.deepEqual(
        revoked.map((e) => [e.actor.id, e.target?.id]),
        [[s.userId, id]],
      )
    })

    it(`keeps at most ${MAX_TOKENS_PER_USER} active tokens per user; expired and revoked ones make room`, async () => {
      const s = await signUp(plinth.app, uniqueEmail('many'))
      const ids: string[] = []
      for (let i = 0; i < MAX_TOKENS_PER_USER; i++) {
        const res = await createToken(s, { name: `t${i}`, scopes: ['self:read'] })
        assert.equal(res.statusCode, 201, res.body)
        ids.push(res.json().id)
      }
      assertProblem(
        await createToken(s, { name: 'one too many', scopes: ['self:read'] }),
        409,
        'PLINTH_DB_CONFLICT',
      )
      await plinth.db.kysely
        .updateTable('api_tokens')
        .set({ expires_at: new Date(clock.now() - 1000) })
        .where('id', '=', ids[0]!)
        .execute()
      assert.equal((await createToken(s, { name: 'after expiry', scopes: ['self:read'] })).statusCode, 201)
      assertProblem(
        await createToken(s, { name: 'full again', scopes: ['self:read'] }),
        409,
        'PLINTH_DB_CONFLICT',
      )
      await inject({ method: 'DELETE', url: `/api/v1/me/tokens/${ids[1]}`, headers: bearer(s.token) })
      assert.equal((await createToken(s, { name: 'after revoke', scopes: ['self:read'] })).statusCode, 201)
    })

    it(`holds the cap of ${MAX_TOKENS_PER_USER} under concurrent creations (count and insert are atomic)`, async () => {
      const s = await signUp(plinth.app, uniqueEmail('race'))
      const start = MAX_TOKENS_PER_USER - 5
      for (let i = 0; i < start; i++)
        assert.equal((await createToken(s, { name: `t${i}`, scopes: ['self:read'] })).statusCode, 201)
      const answers = await Promise.all(
        Array.from({ length: 20 }, (_, i) => createToken(s, { name: `race${i}`, scopes: ['self:read'] })),
      )
      const created = answers.filter((r) => r.statusCode === 201).length
      for (const r of answers.filter((x) => x.statusCode !== 201)) assertProblem(r, 409, 'PLINTH_DB_CONFLICT')
      assert.equal(created, 5)
      const { count } = await plinth.db.kysely
        .selectFrom('api_tokens')
        .select((eb) => eb.fn.countAll<string>().as('count'))
        .where('user_id', '=', s.userId)
        .where('revoked_at', 'is', null)
        .executeTakeFirstOrThrow()
      assert.equal(Number(count), MAX_TOKENS_PER_USER)
    })
  })
})
