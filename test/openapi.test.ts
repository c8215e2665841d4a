import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { after, before, describe, it } from 'node:test'
import type { HTTPMethods } from 'fastify'
import { lintOpenApi } from '../scripts/lint-openapi.ts'
import { PERMISSIONS } from '../src/core/permissions.ts'
import { PLINTH_VERSION } from '../src/core/version.ts'
import { errorRegistry } from '../src/shared/errors.ts'
import { assertProblem } from './helpers/assert-problem.ts'
import { skipUnlessPostgres } from './helpers/services.ts'
import { TEST_MASTER_KEY } from './helpers/test-config.ts'
import { type Backend, startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'
import { thingsModule } from './helpers/things-module.ts'

// biome-ignore lint/suspicious/noExplicitAny: an OpenAPI document is walked as plain JSON
type Doc = any

const HTTP_METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch'] as const

/** Every key in the object graph that TypeBox (or anything else) should have kept to itself. */
function internalKeys(value: unknown, path = '$'): string[] {
  if (value === null || typeof value !== 'object') return []
  const found = Object.getOwnPropertySymbols(value).map((s) => `${path}[${String(s)}]`)
  for (const key of Object.getOwnPropertyNames(value)) {
    if (key.startsWith('~')) found.push(`${path}.${key}`)
    found.push(...internalKeys((value as Record<string, unknown>)[key], `${path}.${key}`))
  }
  return found
}

const schemaOf = (doc: Doc, path: string, method: string, status: string, type = 'application/json') =>
  doc.paths[path]?.[method]?.responses?.[status]?.content?.[type]?.schema

/** A Plinth that only answers config-driven routes: no database work is needed, so no prepare. */
const configOnly = (backend: Backend, env: Record<string, string>) =>
  startTestPlinth({ backend, prepare: false, env: { PLINTH_SHUTDOWN_DELAY: '0', ...env } })

for (const backend of ['embedded', 'postgres'] as const) {
  const pgSkip = backend === 'postgres' ? await skipUnlessPostgres() : false

  describe(`OpenAPI document on ${backend}`, { skip: pgSkip }, () => {
    let plinth: TestPlinth
    let doc: Doc
    before(async () => {
      plinth = await startTestPlinth({ backend, modules: [thingsModule], env: { PLINTH_API_DOCS: 'true' } })
      const res = await plinth.app.inject('/api/openapi.json')
      assert.equal(res.statusCode, 200, res.body)
      assert.match(String(res.headers['content-type']), /^application\/json/)
      doc = res.json()
    })
    after(() => plinth?.close())

    it('is OpenAPI 3.1.0 with the running version', () => {
      assert.equal(doc.openapi, '3.1.0')
      assert.equal(doc.info.version, PLINTH_VERSION)
    })

    it('lists the API root and the operations endpoints with their methods and response schemas', () => {
      assert.deepEqual(schemaOf(doc, '/api/v1', 'get', '200').required, ['name', 'version', 'api'])
      assert.deepEqual(schemaOf(doc, '/live', 'get', '200').properties.status.enum, ['ok'])
      for (const path of ['/ready', '/health']) {
        for (const status of ['200', '503'])
          assert.equal(schemaOf(doc, path, 'get', status)?.type, 'object', `${path} ${status}`)
      }
      assert.ok(schemaOf(doc, '/ready', 'get', '200').properties.failing)
      assert.ok(schemaOf(doc, '/health', 'get', '200').properties.components)
      assert.equal(schemaOf(doc, '/api/metrics', 'get', '200', 'text/plain')?.type, 'string')
      assert.deepEqual(doc.paths['/live'].get.tags, ['operations'])
    })

    it("lists a module's routes from their schemas: body, query, path parameters and responses", () => {
      const create = doc.paths['/api/v1/test/things']?.post
      assert.ok(create, 'POST /api/v1/test/things is missing')
      const body = create.requestBody.content['application/json'].schema
      assert.deepEqual(body.required, ['name', 'count'])
      assert.deepEqual(body.properties.name, { type: 'string', minLength: 1 })
      assert.deepEqual(body.properties.count, { type: 'integer', minimum: 0 })
      assert.equal(body.additionalProperties, false)
      assert.ok(schemaOf(doc, '/api/v1/test/things', 'post', '201'))

      const query = doc.paths['/api/v1/test/things/search'].get.parameters
      assert.deepEqual(
        query.map((p: Doc) => [p.in, p.name, p.required]),
        [
          ['query', 'limit', true],
          ['query', 'q', false],
        ],
      )
      const byName = doc.paths['/api/v1/test/things/{name}'].get.parameters
      assert.deepEqual(
        byName.map((p: Doc) => [p.in, p.name]),
        [['path', 'name']],
      )
    })

    it('describes only routes that exist (no drift between document and server)', () => {
      let operations = 0
      for (const [path, item] of Object.entries<Doc>(doc.paths)) {
        for (const method of HTTP_METHODS.filter((m) => item[m])) {
          const url = path.replace(/\{(\w+)\}/g, ':$1')
          const exists = plinth.app.hasRoute({ method: method.toUpperCase() as HTTPMethods, url })
          assert.ok(exists, `${method.toUpperCase()} ${path} is documented but not routed`)
          operations++
        }
      }
      assert.ok(operations >= 9, `only ${operations} operations documented`)
    })

    it('declares the security schemes: bearer token, session cookie, CSRF header, operator token', () => {
      const schemes = doc.components.securitySchemes
      assert.deepEqual(
        { type: schemes.bearerAuth.type, scheme: schemes.bearerAuth.scheme },
        { type: 'http', scheme: 'bearer' },
      )
      assert.match(schemes.bearerAuth.description, /pls_/)
      assert.match(schemes.bearerAuth.description, /plt_/)
      assert.deepEqual(
        [schemes.sessionCookie.type, schemes.sessionCookie.in, schemes.sessionCookie.name],
        ['apiKey', 'cookie', 'plinth_session'],
      )
      assert.deepEqual(
        [schemes.csrfHeader.type, schemes.csrfHeader.in, schemes.csrfHeader.name],
        ['apiKey', 'header', 'X-CSRF-Token'],
      )
      assert.deepEqual(
        { type: schemes.opsToken.type, scheme: schemes.opsToken.scheme },
        { type: 'http', scheme: 'bearer' },
      )
      assert.match(schemes.opsToken.description, /PLINTH_OPS_TOKEN/)
      assert.match(schemes.opsToken.description, /PLINTH_OPS_NETWORKS/)
      assert.match(doc.paths['/api/metrics'].get.description, /^Permission: operators .*others get 403/)
      assert.match(doc.paths['/health'].get.description, /operators .* get the details/)
      assert.deepEqual(doc.components.schemas.Problem.required, [
        'type',
        'title',
        'status',
        'detail',
        'code',
        'requestId',
        'instance',
      ])
    })

    it('gives every operation its id, security, permission, rate-limit tier and documented responses', () => {
      const ids = new Set<string>()
      const missing: string[] = []
      for (const [path, item] of Object.entries<Doc>(doc.paths)) {
        for (const method of HTTP_METHODS.filter((m) => item[m])) {
          const op = item[method]
          const key = `${method.toUpperCase()} ${path}`
          const fail = (what: string) => missing.push(`${key}: ${what}`)
          if (!op.operationId || ids.has(op.operationId)) fail(`operationId ${op.operationId}`)
          ids.add(op.operationId)
          if (!op.summary) fail('no summary')
          const permission = op['x-plinth-permission']
          if (permission !== 'public' && !PERMISSIONS.includes(permission)) fail(`permission ${permission}`)
          if (!['api', 'auth', 'upload', 'none'].includes(op['x-plinth-rate-limit']))
            fail(`rate limit ${op['x-plinth-rate-limit']}`)
          if (!/Permission: /.test(op.description) || !/Rate limit: /.test(op.description))
            fail('no permission or rate-limit line in the description')
          const changes = !['get', 'head', 'options'].includes(method)
          // The operations endpoints name the operator token (callers from PLINTH_OPS_NETWORKS need none).
          const operators = ['/health', '/ready', '/api/metrics'].includes(path)
          const expectedSecurity = operators
            ? [{ opsToken: [] }, {}]
            : permission === 'public'
              ? []
              : [{ bearerAuth: [] }, changes ? { sessionCookie: [], csrfHeader: [] } : { sessionCookie: [] }]
          if (JSON.stringify(op.security) !== JSON.stringify(expectedSecurity))
            fail(`security ${JSON.stringify(op.security)}`)

          const codes = new Map<string, string[]>()
          for (const [status, response] of Object.entries<Doc>(op.responses)) {
            if (!response.description || response.description === 'Default Response')
              fail(`${status} has no description`)
            if (Number(status) < 400) continue
            const problem = response.content?.['application/problem+json']?.schema
            if (!problem) {
              fail(`${status} is not problem+json`)
              continue
            }
            assert.equal(problem.allOf[0].$ref, '#/components/schemas/Problem')
            const list: string[] = problem.allOf[1].properties.code.enum
            for (const code of list) {
              const entry = errorRegistry[code as keyof typeof errorRegistry]
              if (entry?.status !== Number(status)) fail(`${code} listed under ${status}`)
            }
            codes.set(status, list)
          }
          const success = Object.entries<Doc>(op.responses).filter(([s]) => /^2\d\d$/.test(s))
          if (success.length === 0) fail('no success response')
          // The product's routes (not this file's test fixture) each give their success body a schema.
          if (!path.startsWith('/api/v1/test/'))
            for (const [status, response] of success)
              if (status !== '204' && !Object.values<Doc>(response.content ?? {}).some((c) => c.schema))
                fail(`${status} has no schema`)
          const has = (status: string, code: string) => codes.get(status)?.includes(code)
          if (!has('500', 'PLINTH_INTERNAL')) fail('no 500')
          if (permission !== 'public') {
            if (!has('401', 'PLINTH_AUTH_REQUIRED')) fail('no 401')
            if (!has('403', 'PLINTH_AUTH_FORBIDDEN')) fail('no 403')
            if (changes && !has('403', 'PLINTH_AUTH_CSRF')) fail('no 403 PLINTH_AUTH_CSRF')
            if (!has('503', 'PLINTH_DB_UNAVAILABLE')) fail('no 503 PLINTH_DB_UNAVAILABLE')
          }
          if (op['x-plinth-rate-limit'] !== 'none' && !has('429', 'PLINTH_HTTP_RATE_LIMITED')) fail('no 429')
          if (op.requestBody) {
            for (const [status, code] of [
              ['422', 'PLINTH_HTTP_VALIDATION_FAILED'],
              ['415', 'PLINTH_HTTP_UNSUPPORTED_MEDIA_TYPE'],
              ['400', 'PLINTH_HTTP_INVALID_TEXT'],
            ] as const)
              if (!has(status, code)) fail(`no ${status} ${code}`)
          }
          if (op.parameters?.length && !has('400', 'PLINTH_HTTP_INVALID_REQUEST'))
            fail('no 400 for parameters')
        }
      }
      assert.deepEqual(missing, [])
      assert.ok(ids.size >= 50, `only ${ids.size} operations`)
    })

    it('states what a route declares: its permission, tier and own error codes', () => {
      const login = doc.paths['/api/v1/auth/login'].post
      assert.equal(login['x-plinth-permission'], 'public')
      assert.equal(login['x-plinth-rate-limit'], 'auth')
      assert.deepEqual(login.security, [])
      assert.ok(
        login.responses['401'].content[
          'application/problem+json'
        ].schema.allOf[1].properties.code.enum.includes('PLINTH_AUTH_INVALID_CREDENTIALS'),
      )
      assert.ok(
        login.responses['429'].content[
          'application/problem+json'
        ].schema.allOf[1].properties.code.enum.includes('PLINTH_AUTH_LOCKED'),
      )
      const patch = doc.paths['/api/v1/admin/users/{id}'].patch
      assert.equal(patch['x-plinth-permission'], 'users:manage')
      assert.match(patch.description, /Permission: `users:manage` \(roles: admin;/)
      assert.ok(
        patch.responses['409'].content[
          'application/problem+json'
        ].schema.allOf[1].properties.code.enum.includes('PLINTH_USER_LAST_ADMIN'),
      )
      const me = doc.paths['/api/v1/me'].get
      assert.equal(me['x-plinth-rate-limit'], 'api')
      assert.ok(
        !me.responses['403'].content[
          'application/problem+json'
        ].schema.allOf[1].properties.code.enum.includes('PLINTH_AUTH_MFA_ENROLMENT_REQUIRED'),
        'GET /me is allowed during MFA enrolment',
      )
      const live = doc.paths['/live'].get
      assert.equal(live['x-plinth-rate-limit'], 'none')
      assert.deepEqual(
        live.responses['503'].content['application/problem+json'].schema.allOf[1].properties.code.enum,
        ['PLINTH_HTTP_SHUTTING_DOWN'],
        '/live is pressure-exempt and touches no database',
      )
      // /ready answers 503 with its own body, and may also be refused as a problem.
      assert.ok(doc.paths['/ready'].get.responses['503'].content['application/json'])
      assert.ok(doc.paths['/ready'].get.responses['503'].content['application/problem+json'])
    })

    it('passes the OpenAPI linter (Redocly CLI, redocly.yaml)', async () => {
      const result = await lintOpenApi(doc)
      assert.ok(result.ok, result.output)
    })

    it('leaks no TypeBox internals (~ keys or symbols) into the document', () => {
      assert.deepEqual(internalKeys(doc), [])
      assert.deepEqual(internalKeys(plinth.app.swagger()), [])
    })

    it('serves the docs UI as HTML at /api/docs when PLINTH_API_DOCS=true', async () => {
      const res = await plinth.app.inject('/api/docs')
      assert.equal(res.statusCode, 200)
      assert.match(String(res.headers['content-type']), /^text\/html/)
      assert.match(res.body, /swagger-ui/i)
    })
  })
}

// The UI switch is configuration only and these Plinths touch no data: one backend is enough, and
// the PostgreSQL one starts in a fraction of the embedded one's time.
const uiBackend: Backend = (await skipUnlessPostgres()) === false ? 'postgres' : 'embedded'

describe(`API docs UI switched off (on ${uiBackend})`, () => {
  const plinths: Record<string, TestPlinth> = {}
  before(async () => {
    plinths.disabled = await configOnly(uiBackend, { PLINTH_API_DOCS: 'false' })
    plinths.production = await configOnly(uiBackend, {
      PLINTH_ENV: 'production',
      PLINTH_SECRET_KEY: randomBytes(32).toString('base64'),
      PLINTH_MASTER_KEY: TEST_MASTER_KEY,
    })
  })
  after(async () => {
    await Promise.all(Object.values(plinths).map((p) => p.close()))
  })

  for (const [name, setting] of [
    ['disabled', 'PLINTH_API_DOCS=false'],
    ['production', 'PLINTH_ENV=production (off by default)'],
  ] as const) {
    it(`answers /api/docs with 404 under ${setting}, and still serves the document`, async () => {
      const plinth = plinths[name]
      assert.ok(plinth)
      if (name === 'production') assert.equal(plinth.config.apiDocs, false)
      assertProblem(await plinth.app.inject('/api/docs'), 404, 'PLINTH_HTTP_NOT_FOUND')
      assertProblem(await plinth.app.inject('/api/docs/static/index.html'), 404, 'PLINTH_HTTP_NOT_FOUND')
      const res = await plinth.app.inject('/api/openapi.json')
      assert.equal(res.statusCode, 200)
      assert.equal(res.json().openapi, '3.1.0')
    })
  }
})
