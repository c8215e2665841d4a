import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import type { InjectOptions, LightMyRequestResponse } from 'fastify'
import { Type } from 'typebox'
import type { PlinthModule } from '../src/core/module.ts'
import { PRODUCTION_ENV } from './helpers/production-env.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'

const API_CSP = "default-src 'none'; frame-ancestors 'none'"
const CONSOLE_CSP = "default-src 'self'; frame-ancestors 'none'"
const OWN_CSP = "default-src 'none'; img-src 'self'; frame-ancestors 'none'"

/** What every response must carry, whatever its status or path. */
const EXPECTED: Readonly<Record<string, string>> = {
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
  'cross-origin-opener-policy': 'same-origin',
}
const DENIED_FEATURES = ['camera', 'microphone', 'geolocation', 'payment', 'usb']
const HSTS = /^max-age=(\d+); includeSubDomains$/

/** Routes that answer each status the table needs, plus per-route and per-prefix CSP overrides. */
const headersModule: PlinthModule = {
  name: 'test-security-headers',
  plugins(app) {
    app.securityHeaders.cspForPrefix('/api/v1/sec/console', CONSOLE_CSP)
  },
  routes(api) {
    const config = { public: true }
    api.get('/sec/ok', { config }, async () => ({ ok: true }))
    api.post(
      '/sec/echo',
      { config, schema: { body: Type.Object({ name: Type.String() }, { additionalProperties: false }) } },
      async (request) => request.body,
    )
    api.get('/sec/boom', { config }, async () => {
      throw new Error('boom')
    })
    api.get('/sec/own-csp', { config: { ...config, csp: OWN_CSP } }, async () => ({ ok: true }))
    api.get('/sec/console/page', { config }, async () => ({ ok: true }))
    api.get('/sec/powered', { config }, async (_request, reply) => {
      reply.header('x-powered-by', 'Express')
      return { ok: true }
    })
  },
}

const cases: readonly { name: string; request: InjectOptions; status: number }[] = [
  { name: '200 on /live', request: { url: '/live' }, status: 200 },
  { name: '200 on /api/metrics', request: { url: '/api/metrics' }, status: 200 },
  { name: '200 on /api/v1', request: { url: '/api/v1/sec/ok' }, status: 200 },
  { name: '404 on an unknown /api/v1 path', request: { url: '/api/v1/nope' }, status: 404 },
  { name: '404 on an unknown top-level path', request: { url: '/nope' }, status: 404 },
  { name: '405 on /live', request: { method: 'DELETE', url: '/live' }, status: 405 },
  { name: '405 on /api/metrics', request: { method: 'POST', url: '/api/metrics' }, status: 405 },
  {
    name: '413 on /api/v1',
    request: { method: 'POST', url: '/api/v1/sec/echo', payload: { name: 'x'.repeat(4096) } },
    status: 413,
  },
  {
    name: '422 on /api/v1',
    request: { method: 'POST', url: '/api/v1/sec/echo', payload: { name: 1 } },
    status: 422,
  },
  { name: '500 on /api/v1', request: { url: '/api/v1/sec/boom' }, status: 500 },
]

function assertSecurityHeaders(res: LightMyRequestResponse, csp = API_CSP): void {
  for (const [name, value] of Object.entries(EXPECTED)) assert.equal(res.headers[name], value, name)
  assert.equal(res.headers['content-security-policy'], csp)
  const policy = String(res.headers['permissions-policy'])
  for (const feature of DENIED_FEATURES) assert.ok(policy.includes(`${feature}=()`), `${feature} not denied`)
  assert.equal(res.headers['x-powered-by'], undefined)
}

describe('security headers in test', () => {
  let plinth: TestPlinth
  before(async () => {
    plinth = await startTestPlinth({ env: { PLINTH_BODY_LIMIT: '1kb' }, modules: [headersModule] })
  })
  after(() => plinth?.close())

  for (const c of cases) {
    it(`sets every security header, and no HSTS, on a ${c.name}`, async () => {
      const res = await plinth.app.inject(c.request)
      assert.equal(res.statusCode, c.status, res.body)
      assertSecurityHeaders(res)
      assert.equal(res.headers['strict-transport-security'], undefined)
    })
  }

  it('keeps the strict CSP on the OpenAPI document', async () => {
    const res = await plinth.app.inject('/api/openapi.json')
    assert.equal(res.statusCode, 200)
    assertSecurityHeaders(res)
  })

  it('gives the docs UI a relaxed CSP that still allows no inline or foreign script and no framing', async () => {
    for (const url of ['/api/docs', '/api/docs/static/swagger-ui-bundle.js', '/api/docs/json']) {
      const res = await plinth.app.inject(url)
      assert.equal(res.statusCode, 200, url)
      const csp = String(res.headers['content-security-policy'])
      assert.notEqual(csp, API_CSP, url)
      const directives = new Map(
        csp.split(';').map((d) => {
          const [name = '', ...values] = d.trim().split(/\s+/)
          return [name, values.join(' ')]
        }),
      )
      assert.equal(directives.get('default-src'), "'none'")
      assert.equal(directives.get('script-src'), "'self'")
      assert.equal(directives.get('connect-src'), "'self'")
      assert.equal(directives.get('frame-ancestors'), "'none'")
      assert.equal(res.headers['x-frame-options'], 'DENY')
    }
  })

  it('serves a docs page whose every script and stylesheet is a same-origin file, as its CSP requires', async () => {
    const res = await plinth.app.inject('/api/docs')
    const html = res.body
    const scripts = [...html.matchAll(/<script([^>]*)>([\s\S]*?)<\/script>/g)]
    assert.ok(scripts.length > 0)
    for (const [, attrs = '', body = ''] of scripts) {
      assert.match(attrs, /\ssrc="[^"]+"/, 'inline script')
      assert.equal(body.trim(), '', 'inline script body')
    }
    for (const [, url = ''] of html.matchAll(/(?:src|href)="([^"]+)"/g)) {
      assert.doesNotMatch(url, /^(?:[a-z]+:)?\/\//i, `${url} is not same-origin`)
      const asset = await plinth.app.inject(new URL(url, 'http://localhost/api/docs').pathname)
      assert.equal(asset.statusCode, 200, url)
    }
  })

  it('removes an X-Powered-By header that a handler or plugin sets', async () => {
    const res = await plinth.app.inject('/api/v1/sec/powered')
    assert.equal(res.statusCode, 200)
    assert.equal(res.headers['x-powered-by'], undefined)
  })

  it('lets a route replace the CSP through its config', async () => {
    const res = await plinth.app.inject('/api/v1/sec/own-csp')
    assertSecurityHeaders(res, OWN_CSP)
  })

  it('lets a module give every route under a prefix its own CSP, and only under it', async () => {
    assertSecurityHeaders(await plinth.app.inject('/api/v1/sec/console/page'), CONSOLE_CSP)
    assertSecurityHeaders(await plinth.app.inject('/api/v1/sec/consolex'))
  })
})

describe('security headers in production', () => {
  let plinth: TestPlinth
  before(async () => {
    plinth = await startTestPlinth({
      env: { ...PRODUCTION_ENV, PLINTH_BODY_LIMIT: '1kb' },
      modules: [headersModule],
    })
  })
  after(() => plinth?.close())

  for (const c of cases) {
    it(`adds HSTS for at least six months, subdomains included, on a ${c.name}`, async () => {
      const res = await plinth.app.inject(c.request)
      assert.equal(res.statusCode, c.status, res.body)
      assertSecurityHeaders(res)
      const hsts = HSTS.exec(String(res.headers['strict-transport-security']))
      assert.ok(hsts, `HSTS is ${res.headers['strict-transport-security']}`)
      assert.ok(Number(hsts[1]) >= 15_552_000)
    })
  }
})

describe('security headers in development', () => {
  it('sends no HSTS over plain HTTP', async () => {
    const plinth = await startTestPlinth({ env: { PLINTH_ENV: 'development', PLINTH_LOG_LEVEL: 'silent' } })
    try {
      const res = await plinth.app.inject('/live')
      assertSecurityHeaders(res)
      assert.equal(res.headers['strict-transport-security'], undefined)
    } finally {
      await plinth.close()
    }
  })
})
