import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import type { InjectOptions, LightMyRequestResponse } from 'fastify'
import { ConfigError, loadConfig } from '../src/config/load-config.ts'
import { clientAddress } from '../src/http/plugins/rate-limit.ts'
import { createMemoryRateLimitStore } from '../src/http/plugins/rate-limit-store.ts'
import { PASSWORD, uniqueEmail } from './helpers/accounts.ts'
import { assertProblem } from './helpers/assert-problem.ts'
import { API, LIMITS_ENV, limitsModule } from './helpers/limits-module.ts'
import { PRODUCTION_ENV } from './helpers/production-env.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'

const LOGIN: InjectOptions = { method: 'POST', url: '/api/v1/limits/login' }
const UPLOAD: InjectOptions = { method: 'POST', url: '/api/v1/limits/upload' }

let nextIp = 1
/** A client address no other test uses, so that each test starts with fresh budgets. */
const freshIp = () => `198.51.100.${nextIp++}`

describe('rate limits (in-process)', () => {
  let plinth: TestPlinth
  const send = (request: InjectOptions | string, from: { ip?: string; user?: string } = {}) => {
    const base = typeof request === 'string' ? { url: request } : request
    return plinth.app.inject({
      ...base,
      ...(from.ip ? { remoteAddress: from.ip } : {}),
      headers: { ...base.headers, ...(from.user ? { 'x-test-user': from.user } : {}) },
    })
  }
  const statuses = async (
    n: number,
    request: InjectOptions | string,
    from: { ip?: string; user?: string },
  ) => {
    const out: number[] = []
    for (let i = 0; i < n; i++) out.push((await send(request, from)).statusCode)
    return out
  }
  const rejections = async (tier: string) => {
    const res = await plinth.app.inject('/api/metrics')
    const m = new RegExp(`^plinth_rate_limited_total\\{tier="${tier}"\\} (\\d+)$`, 'm').exec(res.body)
    assert.ok(m, `plinth_rate_limited_total{tier="${tier}"} is not exported`)
    return Number(m[1])
  }

  before(async () => {
    plinth = await startTestPlinth({
      env: { ...LIMITS_ENV, PLINTH_TRUST_PROXY: '127.0.0.1' },
      modules: [limitsModule],
    })
  })
  after(() => plinth?.close())

  it('counts down RateLimit-Remaining on successful responses, then answers 429 problem+json with Retry-After', async () => {
    const from = { ip: freshIp() }
    const ok: LightMyRequestResponse[] = []
    for (let i = 0; i < 3; i++) ok.push(await send(API, from))
    assert.deepEqual(
      ok.map((r) => [r.statusCode, r.headers['ratelimit-limit'], r.headers['ratelimit-remaining']]),
      [
        [200, '3', '2'],
        [200, '3', '1'],
        [200, '3', '0'],
      ],
    )
    for (const r of ok) {
      assert.equal(r.headers['ratelimit-policy'], '3;w=60')
      const reset = Number(r.headers['ratelimit-reset'])
      assert.ok(reset >= 1 && reset <= 60, `RateLimit-Reset ${reset}`)
    }
    const refused = await send(API, from)
    const body = assertProblem(refused, 429, 'PLINTH_HTTP_RATE_LIMITED')
    assert.match(String(body.detail), /3 per 1 min/)
    const retryAfter = Number(refused.headers['retry-after'])
    assert.ok(retryAfter >= 1 && retryAfter <= 60, `Retry-After ${retryAfter}`)
    assert.equal(refused.headers['ratelimit-remaining'], '0')
    assert.equal(refused.headers['ratelimit-limit'], '3')
    assert.equal(refused.headers['x-content-type-options'], 'nosniff')
  })

  it('counts each tier separately: spending one leaves the others whole', async () => {
    const from = { ip: freshIp() }
    assert.deepEqual(await statuses(4, API, from), [200, 200, 200, 429])
    assert.deepEqual(await statuses(3, LOGIN, from), [200, 200, 429])
    assert.deepEqual(await statuses(2, UPLOAD, from), [200, 429])
    const login = await send(LOGIN, { ip: freshIp() })
    assert.equal(login.headers['ratelimit-limit'], '2')
  })

  it('keys a signed-in user by user id wherever they call from, and anonymous callers by IP', async () => {
    const [a, b] = [freshIp(), freshIp()]
    assert.deepEqual(await statuses(3, API, { ip: a, user: 'user-1' }), [200, 200, 200])
    assert.equal((await send(API, { ip: b, user: 'user-1' })).statusCode, 429)
    assert.equal((await send(API, { ip: a, user: 'user-2' })).statusCode, 200)
    assert.deepEqual(await statuses(4, API, { ip: a }), [200, 200, 200, 429])
  })

  it('counts authentication routes by IP whatever session or token is sent: credentials do not multiply the auth tier', async () => {
    const from = freshIp()
    assert.deepEqual(
      [
        (await send(LOGIN, { ip: from, user: 'holder-1' })).statusCode,
        (await send(LOGIN, { ip: from, user: 'holder-2' })).statusCode,
      ],
      [200, 200],
    )
    assertProblem(await send(LOGIN, { ip: from, user: 'holder-3' }), 429, 'PLINTH_HTTP_RATE_LIMITED')
    assertProblem(await send(LOGIN, { ip: from }), 429, 'PLINTH_HTTP_RATE_LIMITED')
    // The real sign-in route, with real session tokens: one budget for the address.
    const sessions: string[] = []
    for (let i = 0; i < 3; i++) {
      const res = await send(
        {
          method: 'POST',
          url: '/api/v1/auth/signup',
          payload: { email: uniqueEmail('holder'), password: PASSWORD },
        },
        { ip: freshIp() },
      )
      assert.equal(res.statusCode, 201, res.body)
      sessions.push(res.json().token)
    }
    const ip = freshIp()
    const codes: number[] = []
    for (const token of sessions)
      codes.push(
        (
          await send(
            {
              method: 'POST',
              url: '/api/v1/auth/login',
              headers: { authorization: `Bearer ${token}` },
              payload: { email: uniqueEmail('nobody'), password: 'wrong-password-1' },
            },
            { ip },
          )
        ).statusCode,
      )
    assert.deepEqual(codes, [401, 401, 429])
  })

  it('counts sign-in, sign-up and reset attempts per target account too, whatever address they come from', async () => {
    const email = uniqueEmail('target')
    const attempt = (url: string, address: string) =>
      send(
        { method: 'POST', url, payload: { email: address, password: 'wrong-password-1' } },
        { ip: freshIp() },
      )
    assert.equal((await attempt('/api/v1/auth/login', email)).statusCode, 401)
    assert.equal((await attempt('/api/v1/auth/login', email.toUpperCase())).statusCode, 401)
    const refused = await attempt('/api/v1/auth/login', email)
    const body = assertProblem(refused, 429, 'PLINTH_HTTP_RATE_LIMITED')
    assert.match(String(body.detail), /2 per 1 min for this account/)
    assert.equal(refused.headers['ratelimit-remaining'], '0')
    assert.ok(Number(refused.headers['retry-after']) >= 1)
    // The reset route counts against the same account; another account is unaffected.
    assertProblem(
      await send(
        { method: 'POST', url: '/api/v1/auth/password-reset', payload: { email } },
        { ip: freshIp() },
      ),
      429,
      'PLINTH_HTTP_RATE_LIMITED',
    )
    assert.equal((await attempt('/api/v1/auth/login', uniqueEmail('other'))).statusCode, 401)
  })

  it('separates clients behind a trusted proxy by X-Forwarded-For', async () => {
    const [a, b] = [freshIp(), freshIp()]
    const via = (client: string) => ({ url: API, headers: { 'x-forwarded-for': client } })
    assert.deepEqual(await statuses(4, via(a), { ip: '127.0.0.1' }), [200, 200, 200, 429])
    assert.equal((await send(via(b), { ip: '127.0.0.1' })).statusCode, 200)
  })

  it('ignores X-Forwarded-For from an untrusted peer: changing it does not buy a fresh budget', async () => {
    const peer = freshIp()
    const codes: number[] = []
    for (let i = 0; i < 4; i++) {
      codes.push(
        (await send({ url: API, headers: { 'x-forwarded-for': `203.0.113.${i}` } }, { ip: peer })).statusCode,
      )
    }
    assert.deepEqual(codes, [200, 200, 200, 429])
  })

  it('exempts probes, metrics, routes that opt out and the docs UI', async () => {
    const from = { ip: freshIp() }
    for (const url of ['/live', '/ready', '/health', '/api/v1/limits/free', '/api/docs', '/api/docs/json']) {
      const codes = await statuses(5, url, from)
      assert.ok(
        codes.every((c) => c === 200),
        `${url}: ${codes}`,
      )
      assert.equal((await send(url, from)).headers['ratelimit-limit'], undefined, url)
    }
    assert.equal((await send(API, from)).headers['ratelimit-remaining'], '2')
  })

  it('counts unknown paths against the api tier, so scanning is limited too', async () => {
    const from = { ip: freshIp() }
    assert.deepEqual(await statuses(4, '/api/v1/nope', from), [404, 404, 404, 429])
    assert.equal((await send(API, from)).statusCode, 429)
  })

  it('refuses an address that keeps presenting bad credentials before authentication runs', async () => {
    const from = { ip: freshIp() }
    const bogus = { url: '/api/v1/limits/private', headers: { authorization: 'Bearer pls_not-a-session' } }
    assert.deepEqual(await statuses(3, bogus, from), [401, 401, 401])
    const refused = await send(bogus, from)
    assertProblem(refused, 429, 'PLINTH_HTTP_RATE_LIMITED')
    assert.ok(Number(refused.headers['retry-after']) >= 1)
    assert.equal((await send(API, from)).statusCode, 429)
    // Another address, and the auth tier of the same address, are unaffected.
    assert.equal((await send(bogus, { ip: freshIp() })).statusCode, 401)
    assert.equal((await send(LOGIN, from)).statusCode, 200)
  })

  it('does not hold a few refusals against an address: its own budget stays whole', async () => {
    const from = { ip: freshIp() }
    assert.equal((await send('/api/v1/limits/private', from)).statusCode, 401)
    assert.equal((await send(API, from)).headers['ratelimit-remaining'], '2')
  })

  it('counts refusals by tier in plinth_rate_limited_total', async () => {
    const before = { api: await rejections('api'), auth: await rejections('auth') }
    const from = { ip: freshIp() }
    await statuses(3, LOGIN, from)
    await statuses(2, LOGIN, from)
    assert.equal(await rejections('auth'), before.auth + 3)
    assert.equal(await rejections('api'), before.api)
  })
})

describe('rate-limit building blocks', () => {
  it('starts a fresh window once the current one ends, and bounds the number of keys', async () => {
    let now = 0
    const store = createMemoryRateLimitStore({ now: () => now, maxKeys: 3 })
    assert.deepEqual(await store.hit('a', 1000), { count: 1, resetMs: 1000 })
    now = 400
    assert.deepEqual(await store.hit('a', 1000), { count: 2, resetMs: 600 })
    now = 1000
    assert.deepEqual(await store.hit('a', 1000), { count: 1, resetMs: 1000 })
    for (const key of ['b', 'c', 'd', 'e']) await store.hit(key, 1000)
    assert.equal(store.size, 3)
  })

  it('groups IPv6 clients by /64 and reads IPv4-mapped addresses as IPv4', () => {
    assert.equal(clientAddress('2001:db8:1:2:3:4:5:6'), '2001:db8:1:2::/64')
    assert.equal(clientAddress('2001:db8:1:2::9'), '2001:db8:1:2::/64')
    assert.equal(clientAddress('2001:DB8::1'), '2001:db8:0:0::/64')
    assert.equal(clientAddress('::ffff:192.0.2.1'), '192.0.2.1')
    assert.equal(clientAddress('192.0.2.1'), '192.0.2.1')
    assert.notEqual(clientAddress('2001:db8:1:3::1'), clientAddress('2001:db8:1:2::1'))
  })

  it('refuses turning the auth limit off in production and a window outside 1s..1d, listing both', () => {
    const load = (env: Record<string, string>) => loadConfig({ env, envFile: false })
    assert.equal(load({ PLINTH_ENV: 'test', PLINTH_RATE_LIMIT_AUTH: '0' }).rateLimitAuth, 0)
    let problems = ''
    assert.throws(
      () => load({ ...PRODUCTION_ENV, PLINTH_RATE_LIMIT_AUTH: '0', PLINTH_RATE_LIMIT_WINDOW: '500ms' }),
      (err) => {
        problems = err instanceof ConfigError ? err.problems.join('\n') : String(err)
        return err instanceof ConfigError
      },
    )
    assert.match(problems, /PLINTH_RATE_LIMIT_AUTH=0 is refused in production/)
    assert.match(problems, /PLINTH_RATE_LIMIT_WINDOW must be from 1s to 1d/)
  })
})
