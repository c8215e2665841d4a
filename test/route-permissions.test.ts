import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { after, before, describe, it } from 'node:test'
import type { FastifyContextConfig } from 'fastify'
import type { PlinthModule } from '../src/core/module.ts'
import { PERMISSIONS, type Permission, ROLE_PERMISSIONS } from '../src/core/permissions.ts'
import {
  bearer,
  createUser,
  NO_RATE_LIMITS,
  PASSWORD,
  type Session,
  uniqueEmail,
} from './helpers/accounts.ts'
import { runScenarios } from './helpers/api-scenario.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'

interface Route {
  readonly method: string
  readonly url: string
  readonly config: FastifyContextConfig
}

/** Routes Plinth does not declare itself, as authenticate.plugin.ts lists them: docs UI assets and CORS preflight. */
const thirdParty = (url: string) => url === '*' || url === '/api/docs' || url.startsWith('/api/docs/')
const PROBE = 'x-test-route-probe'

/**
 * Sees every route: `onRoute` for those registered after the modules' plugins (operations and
 * module routes), and a probe hook that reports the config of the few registered before them
 * (OpenAPI, docs UI, CORS), which `printRoutes` lists.
 */
function routeCollector() {
  const routes: Route[] = []
  const module: PlinthModule = {
    name: 'test-route-collector',
    plugins(app) {
      app.addHook('onRoute', (r) => {
        for (const method of [r.method].flat())
          routes.push({ method, url: r.url, config: (r.config ?? {}) as FastifyContextConfig })
      })
      app.addHook('onRequest', async (request, reply) => {
        if (request.headers[PROBE] === undefined) return
        const { method, url, config } = request.routeOptions
        await reply.code(204).header(PROBE, JSON.stringify({ method, url, config })).send()
      })
    },
  }
  return { routes, module }
}

/** Every [method, url] `printRoutes` shows (its tree flattened). */
function printedRoutes(tree: string): [string, string][] {
  const stack: string[] = []
  const out: [string, string][] = []
  for (const line of tree.split('\n')) {
    const m = /^((?:│ {3}| {4})*)[├└]── (.+?)(?: \(([A-Z, ]+)\))?$/.exec(line)
    if (!m) continue
    const depth = m[1]!.length / 4
    stack.length = depth
    stack.push(m[2]!)
    for (const method of m[3]?.split(', ') ?? []) out.push([method, stack.join('')])
  }
  return out
}

const fill = (url: string) => url.replace(/:[A-Za-z]+/g, () => randomUUID()).replace('*', 'x')

describe('route permissions', () => {
  const collector = routeCollector()
  let plinth: TestPlinth
  let routes: Route[]
  let viewer: Session
  const viewerEmail = uniqueEmail('viewer')
  const tokens = new Map<Permission, string>()

  before(async () => {
    plinth = await startTestPlinth({
      env: { ...NO_RATE_LIMITS, PLINTH_CORS_ORIGINS: 'https://app.example', PLINTH_API_DOCS: 'true' },
      modules: [collector.module],
    })
    routes = [...collector.routes]
    const seen = new Set(routes.map((r) => `${r.method} ${r.url}`))
    for (const [method, url] of printedRoutes(plinth.app.printRoutes({ commonPrefix: false }))) {
      if (seen.has(`${method} ${url}`)) continue
      // printRoutes writes a segment whose routes name their parameter differently as `:name|:id`
      const spellings = url
        .split('/')
        .reduce<string[]>(
          (acc, seg) => acc.flatMap((p) => seg.split('|').map((alt) => `${p}/${alt}`.replace('//', '/'))),
          [''],
        )
      if (spellings.some((u) => seen.has(`${method} ${u}`))) continue
      seen.add(`${method} ${url}`)
      // Exempt whatever they declare (CORS answers preflights before any later hook could probe).
      if (thirdParty(url)) {
        routes.push({ method, url, config: {} })
        continue
      }
      const res = await plinth.app.inject({
        method: method as 'GET',
        url: fill(url),
        headers: { [PROBE]: '1' },
      })
      const probed = res.headers[PROBE]
      assert.ok(typeof probed === 'string', `no config for ${method} ${url}: ${res.statusCode} ${res.body}`)
      routes.push({ ...(JSON.parse(probed) as Route), url })
    }
    viewer = await createUser(plinth, viewerEmail, 'viewer')
    const admin = await createUser(plinth, uniqueEmail('admin'), 'admin')
    // Two single-scope tokens: for any route, one of them lacks its permission.
    for (const scope of ['self:read', 'files:read'] as const) {
      const res = await plinth.app.inject({
        method: 'POST',
        url: '/api/v1/me/tokens',
        headers: bearer(admin.token),
        payload: { name: scope, scopes: [scope] },
      })
      assert.equal(res.statusCode, 201, res.body)
      tokens.set(scope, res.json().token)
    }
  })
  after(() => plinth?.close())

  it('sees the whole route table, including the routes of the docs UI and of CORS', () => {
    const keys = new Set(routes.map((r) => `${r.method} ${r.url}`))
    for (const key of [
      'GET /api/v1/admin/users/:id',
      'DELETE /api/v1/me/tokens/:id',
      'GET /live',
      'GET /api/openapi.json',
      'GET /api/docs',
      'OPTIONS *',
    ])
      assert.ok(keys.has(key), `${key} missing from ${[...keys].join(', ')}`)
  })

  it('finds on every route a known config.permission or config.public: true, never both', () => {
    const undeclared = routes.filter((r) => {
      if (thirdParty(r.url)) return false
      const { permission, public: isPublic } = r.config
      const known = permission !== undefined && (PERMISSIONS as readonly string[]).includes(permission)
      return isPublic === true ? permission !== undefined : !known
    })
    assert.deepEqual(
      undeclared.map((r) => `${r.method} ${r.url} ${JSON.stringify(r.config)}`),
      [],
    )
  })

  const protectedRoutes = () => routes.filter((r) => r.config.permission !== undefined && r.method !== 'HEAD')

  it('answers 401 PLINTH_AUTH_REQUIRED on every protected route without credentials', async () => {
    assert.ok(protectedRoutes().length >= 15)
    await runScenarios(
      plinth.app,
      protectedRoutes().map(({ method, url }) => ({
        name: 'no credentials',
        method: method as 'GET',
        url: fill(url),
        body: {},
        expectStatus: 401,
        expectCode: 'PLINTH_AUTH_REQUIRED',
      })),
    )
  })

  it('answers 403 PLINTH_AUTH_FORBIDDEN to a viewer on every route needing a permission viewers lack', async () => {
    const denied = protectedRoutes().filter((r) => !ROLE_PERMISSIONS.viewer.has(r.config.permission!))
    assert.ok(denied.length >= 8)
    await runScenarios(
      plinth.app,
      denied.map(({ method, url, config }) => ({
        name: `viewer without ${config.permission}`,
        method: method as 'GET',
        url: fill(url),
        headers: bearer(viewer.token),
        body: {},
        expectStatus: 403,
        expectCode: 'PLINTH_AUTH_FORBIDDEN',
      })),
    )
  })

  it('answers 403 PLINTH_AUTH_FORBIDDEN to an admin’s API token whose scopes lack the permission', async () => {
    await runScenarios(
      plinth.app,
      protectedRoutes().map(({ method, url, config }) => {
        const scope = config.permission === 'self:read' ? 'files:read' : 'self:read'
        return {
          name: `token scoped to ${scope} on a route needing ${config.permission}`,
          method: method as 'GET',
          url: fill(url),
          headers: bearer(tokens.get(scope)!),
          body: {},
          expectStatus: 403,
          expectCode: 'PLINTH_AUTH_FORBIDDEN',
        }
      }),
    )
  })

  it('marks answers of protected and sign-in routes Cache-Control: no-store, and leaves public ones alone', async () => {
    const [route] = protectedRoutes()
    const refused = await plinth.app.inject({
      method: route!.method as 'GET',
      url: fill(route!.url),
      payload: {},
    })
    const me = await plinth.app.inject({ url: '/api/v1/me', headers: bearer(viewer.token) })
    const login = await plinth.app.inject({
      method: 'POST',
      url: '/api/v1/auth/login',
      payload: { email: viewerEmail, password: PASSWORD },
    })
    for (const res of [refused, me, login]) assert.equal(res.headers['cache-control'], 'no-store', res.body)
    assert.equal((await plinth.app.inject('/api/v1')).headers['cache-control'], undefined)
  })

  const bootCases: [string, PlinthModule['routes'], RegExp][] = [
    [
      'a route that declares neither permission nor public',
      (api) => {
        api.get('/careless', async () => ({}))
      },
      /route GET \/api\/v1\/careless declares neither config\.permission nor config\.public/,
    ],
    [
      'a route that names an unknown permission',
      (api) => {
        api.get('/typo', { config: { permission: 'users:mange' as Permission } }, async () => ({}))
      },
      /route GET \/api\/v1\/typo declares the unknown permission "users:mange"/,
    ],
    [
      'a route that declares both permission and public',
      (api) => {
        api.get('/both', { config: { permission: 'self:read', public: true } }, async () => ({}))
      },
      /route GET \/api\/v1\/both declares both config\.permission and config\.public/,
    ],
  ]
  for (const [name, routesOf, message] of bootCases) {
    it(`refuses to boot with ${name}`, async () => {
      await assert.rejects(
        startTestPlinth({
          modules: [{ name: 'test-careless', routes: routesOf }],
          // Never connected (no prepare): spares starting an embedded database for nothing.
          env: { DATABASE_URL: 'postgres://plinth@127.0.0.1:1/never' },
          prepare: false,
        }),
        message,
      )
    })
  }
})
