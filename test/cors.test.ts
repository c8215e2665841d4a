import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import type { LightMyRequestResponse } from 'fastify'
import { assertProblem } from './helpers/assert-problem.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'

const ALLOWED = 'https://app.example.com'
const OTHER = 'https://evil.example.net'

const preflight = (origin: string, method = 'PUT', url = '/api/v1') => ({
  method: 'OPTIONS' as const,
  url,
  headers: {
    origin,
    'access-control-request-method': method,
    'access-control-request-headers': 'content-type, authorization',
  },
})

const corsHeaders = (res: LightMyRequestResponse) =>
  Object.keys(res.headers).filter((name) => name.startsWith('access-control-'))

describe('CORS with allowed origins and credentials', () => {
  let plinth: TestPlinth
  before(async () => {
    plinth = await startTestPlinth({
      env: { PLINTH_CORS_ORIGINS: `${ALLOWED},https://admin.example.com`, PLINTH_CORS_CREDENTIALS: 'true' },
    })
  })
  after(() => plinth?.close())

  it('answers a preflight from an allowed origin with 204, echoing it, credentials and every write method', async () => {
    const res = await plinth.app.inject(preflight(ALLOWED, 'DELETE'))
    assert.equal(res.statusCode, 204, res.body)
    assert.equal(res.headers['access-control-allow-origin'], ALLOWED)
    assert.equal(res.headers['access-control-allow-credentials'], 'true')
    const methods = String(res.headers['access-control-allow-methods']).split(/,\s*/)
    for (const m of ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'])
      assert.ok(methods.includes(m), `${m} not allowed`)
    assert.match(String(res.headers['access-control-allow-headers']), /authorization/)
    assert.equal(res.headers['access-control-max-age'], '600')
    assert.match(String(res.headers.vary), /origin/i)
    // The preflight is answered, not lost to the 404/405 handler, and carries the security headers.
    assert.equal(res.headers['x-content-type-options'], 'nosniff')
  })

  it('refuses an OPTIONS request that is no preflight (no Origin or no requested method) as problem+json, not text', async () => {
    for (const headers of [{ 'access-control-request-method': 'PUT' }, { origin: ALLOWED }, {}]) {
      const res = await plinth.app.inject({ method: 'OPTIONS', url: '/api/v1', headers })
      const body = assertProblem(res, 400, 'PLINTH_HTTP_BAD_REQUEST')
      assert.match(String(body.detail), /Origin and Access-Control-Request-Method/)
      assert.equal(res.headers['x-content-type-options'], 'nosniff')
    }
  })

  it('answers a preflight for a path that only has other methods, and for an operations path', async () => {
    for (const url of ['/api/v1', '/live', '/api/metrics']) {
      const res = await plinth.app.inject(preflight(ALLOWED, 'POST', url))
      assert.equal(res.statusCode, 204, `${url}: ${res.body}`)
      assert.equal(res.headers['access-control-allow-origin'], ALLOWED)
    }
  })

  it('echoes an allowed origin on a simple GET and exposes the request-id and rate-limit headers', async () => {
    const res = await plinth.app.inject({ url: '/api/v1', headers: { origin: ALLOWED } })
    assert.equal(res.statusCode, 200)
    assert.equal(res.headers['access-control-allow-origin'], ALLOWED)
    assert.equal(res.headers['access-control-allow-credentials'], 'true')
    const exposed = String(res.headers['access-control-expose-headers']).split(/,\s*/)
    for (const h of ['x-request-id', 'retry-after', 'ratelimit-remaining', 'ratelimit-reset'])
      assert.ok(exposed.includes(h), `${h} not exposed`)
  })

  it('echoes the allowed origin on error responses too, so the browser can read the problem', async () => {
    const res = await plinth.app.inject({ url: '/api/v1/nope', headers: { origin: ALLOWED } })
    assertProblem(res, 404, 'PLINTH_HTTP_NOT_FOUND')
    assert.equal(res.headers['access-control-allow-origin'], ALLOWED)
  })

  it('gives a disallowed origin no Access-Control-Allow-Origin, on a GET or a preflight', async () => {
    const get = await plinth.app.inject({ url: '/api/v1', headers: { origin: OTHER } })
    assert.equal(get.statusCode, 200)
    assert.equal(get.headers['access-control-allow-origin'], undefined)
    const pre = await plinth.app.inject(preflight(OTHER))
    assert.equal(pre.headers['access-control-allow-origin'], undefined)
  })

  it('still tells 405 from 404 although CORS registers an OPTIONS wildcard route', async () => {
    const res = await plinth.app.inject({ method: 'DELETE', url: '/live', headers: { origin: ALLOWED } })
    assertProblem(res, 405, 'PLINTH_HTTP_METHOD_NOT_ALLOWED')
    assert.equal(res.headers.allow, 'GET, HEAD')
    assertProblem(await plinth.app.inject({ method: 'DELETE', url: '/nope' }), 404, 'PLINTH_HTTP_NOT_FOUND')
  })
})

describe('CORS without configured origins', () => {
  let plinth: TestPlinth
  before(async () => {
    plinth = await startTestPlinth()
  })
  after(() => plinth?.close())

  it('sends no CORS header at all, on a GET or a preflight', async () => {
    const get = await plinth.app.inject({ url: '/api/v1', headers: { origin: ALLOWED } })
    assert.equal(get.statusCode, 200)
    assert.deepEqual(corsHeaders(get), [])
    const pre = await plinth.app.inject(preflight(ALLOWED, 'GET', '/live'))
    assert.deepEqual(corsHeaders(pre), [])
    // No CORS route: an OPTIONS on a GET path is a plain 405.
    assertProblem(pre, 405, 'PLINTH_HTTP_METHOD_NOT_ALLOWED')
  })
})
