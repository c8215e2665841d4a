import assert from 'node:assert/strict'
import { connect } from 'node:net'
import { after, before, describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import type { InjectOptions, LightMyRequestResponse } from 'fastify'
import pg from 'pg'
import { bearer, PASSWORD, uniqueEmail } from './helpers/accounts.ts'
import { assertProblem } from './helpers/assert-problem.ts'
import { skipUnlessPostgres } from './helpers/services.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'
import { SECRET_MESSAGE, SECRET_TABLE, thingsModule } from './helpers/things-module.ts'

const THINGS = '/api/v1/test/things'
const json = (payload: unknown): InjectOptions => ({
  method: 'POST',
  url: THINGS,
  payload: payload as object,
})

/** One row of the matrix (PocketBase ApiScenario style). */
interface Scenario {
  readonly name: string
  readonly request: InjectOptions
  readonly status: number
  readonly code: string
  readonly setup?: (plinth: TestPlinth) => Promise<void>
  readonly expect?: (body: Record<string, unknown>, res: LightMyRequestResponse) => void
}

/** The `errors` of a validation problem, as "in:field" pairs. */
const failing = (body: Record<string, unknown>) =>
  (body.errors as { in: string; field: string }[]).map((e) => `${e.in}:${e.field}`).sort()

/** The headers every Plinth answer carries. */
function assertSecurityHeaders(res: { headers: Record<string, unknown> }): void {
  assert.equal(res.headers['x-content-type-options'], 'nosniff')
  assert.equal(res.headers['x-frame-options'], 'DENY')
  assert.match(String(res.headers['content-security-policy']), /default-src 'none'/)
  assert.ok(res.headers['x-request-id'], 'no X-Request-Id')
}

/** Raw bytes to a listening server; resolves with everything it answered until it closed. */
function rawExchange(port: number, bytes: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1')
    let answer = ''
    socket.setEncoding('utf8')
    socket.on('data', (chunk) => {
      answer += chunk
    })
    socket.on('error', reject)
    socket.on('close', () => resolve(answer))
    socket.write(bytes)
  })
}

/** Nothing internal: no message of the thrown error, no stack frame, no SQL. */
function assertNoInternals(res: LightMyRequestResponse, body: Record<string, unknown>): void {
  assert.equal(body.debug, undefined)
  for (const leak of [
    SECRET_MESSAGE,
    SECRET_TABLE,
    'secret_column',
    'select',
    'duplicate key',
    'test_things_pkey',
  ])
    assert.ok(!res.body.toLowerCase().includes(leak), `response leaks "${leak}": ${res.body}`)
  assert.doesNotMatch(res.body, /\bat .+:\d+:\d+|node:internal|\.ts:\d+/)
}

const scenarios: readonly Scenario[] = [
  {
    name: 'an unknown path answers 404',
    request: { url: '/api/v1/no-such-thing?token=abc' },
    status: 404,
    code: 'PLINTH_HTTP_NOT_FOUND',
    expect: (body) => assert.equal(body.instance, '/api/v1/no-such-thing'),
  },
  {
    name: 'a path that exists under another method answers 405 with Allow',
    request: { method: 'DELETE', url: THINGS },
    status: 405,
    code: 'PLINTH_HTTP_METHOD_NOT_ALLOWED',
    expect: (_body, res) => assert.equal(res.headers.allow, 'POST'),
  },
  {
    name: 'a GET-only operations path answers 405 with Allow: GET, HEAD',
    request: { method: 'PUT', url: '/live' },
    status: 405,
    code: 'PLINTH_HTTP_METHOD_NOT_ALLOWED',
    expect: (_body, res) => assert.equal(res.headers.allow, 'GET, HEAD'),
  },
  {
    name: 'a body over PLINTH_BODY_LIMIT answers 413',
    request: json({ name: 'x'.repeat(5000), count: 1 }),
    status: 413,
    code: 'PLINTH_HTTP_BODY_TOO_LARGE',
  },
  {
    name: 'a text/plain body to a JSON route answers 415',
    request: { method: 'POST', url: THINGS, headers: { 'content-type': 'text/plain' }, payload: 'name=a' },
    status: 415,
    code: 'PLINTH_HTTP_UNSUPPORTED_MEDIA_TYPE',
  },
  {
    name: 'malformed JSON answers 400',
    request: {
      method: 'POST',
      url: THINGS,
      headers: { 'content-type': 'application/json' },
      payload: '{"name": ',
    },
    status: 400,
    code: 'PLINTH_HTTP_MALFORMED_BODY',
  },
  {
    name: 'an empty JSON body answers 400',
    request: { method: 'POST', url: THINGS, headers: { 'content-type': 'application/json' }, payload: '' },
    status: 400,
    code: 'PLINTH_HTTP_MALFORMED_BODY',
  },
  {
    name: 'a missing field answers 422 naming it',
    request: json({ name: 'a' }),
    status: 422,
    code: 'PLINTH_HTTP_VALIDATION_FAILED',
    expect: (body) => assert.deepEqual(failing(body), ['body:count']),
  },
  {
    name: 'every missing field is named at once',
    request: json({}),
    status: 422,
    code: 'PLINTH_HTTP_VALIDATION_FAILED',
    expect: (body) => assert.deepEqual(failing(body), ['body:count', 'body:name']),
  },
  {
    name: 'wrong types answer 422 naming each field',
    request: json({ name: { first: 'a' }, count: 'many' }),
    status: 422,
    code: 'PLINTH_HTTP_VALIDATION_FAILED',
    expect: (body) => assert.deepEqual(failing(body), ['body:count', 'body:name']),
  },
  {
    name: 'body values are not coerced: a numeric string or a number for a string answers 422',
    request: json({ name: 5, count: '7' }),
    status: 422,
    code: 'PLINTH_HTTP_VALIDATION_FAILED',
    expect: (body) => assert.deepEqual(failing(body), ['body:count', 'body:name']),
  },
  {
    name: 'values outside the constraints answer 422',
    request: json({ name: '', count: 1.5 }),
    status: 422,
    code: 'PLINTH_HTTP_VALIDATION_FAILED',
    expect: (body) => assert.deepEqual(failing(body), ['body:count', 'body:name']),
  },
  {
    name: 'an unknown field is refused with 422, not silently dropped',
    request: json({ name: 'a', count: 1, admin: true }),
    status: 422,
    code: 'PLINTH_HTTP_VALIDATION_FAILED',
    expect: (body) =>
      assert.deepEqual(body.errors, [{ in: 'body', field: 'admin', message: 'is not allowed' }]),
  },
  {
    name: 'a querystring of the wrong type answers 400',
    request: { url: `${THINGS}/search?limit=abc` },
    status: 400,
    code: 'PLINTH_HTTP_INVALID_REQUEST',
    expect: (body) => assert.deepEqual(failing(body), ['querystring:limit']),
  },
  {
    name: 'a missing required query parameter answers 400',
    request: { url: `${THINGS}/search?q=x` },
    status: 400,
    code: 'PLINTH_HTTP_INVALID_REQUEST',
    expect: (body) => assert.deepEqual(failing(body), ['querystring:limit']),
  },
  {
    name: 'an unknown query parameter answers 400',
    request: { url: `${THINGS}/search?limit=5&debug=1` },
    status: 400,
    code: 'PLINTH_HTTP_INVALID_REQUEST',
    expect: (body) => assert.deepEqual(failing(body), ['querystring:debug']),
  },
  {
    name: 'inserting a duplicate row answers 409 without database details',
    setup: async (plinth) => {
      const first = await plinth.app.inject(json({ name: 'duplicate', count: 1 }))
      assert.equal(first.statusCode, 201, first.body)
    },
    request: json({ name: 'duplicate', count: 2 }),
    status: 409,
    code: 'PLINTH_DB_CONFLICT',
    expect: (body, res) => assertNoInternals(res, body),
  },
  {
    name: 'a thrown Error answers 500 with no message or stack',
    request: { url: '/api/v1/test/boom' },
    status: 500,
    code: 'PLINTH_INTERNAL',
    expect: (body, res) => assertNoInternals(res, body),
  },
  {
    name: 'a failing SQL statement answers 500 with no SQL',
    request: { url: '/api/v1/test/bad-sql' },
    status: 500,
    code: 'PLINTH_INTERNAL',
    expect: (body, res) => assertNoInternals(res, body),
  },
  // Issue 9, defect 3: text PostgreSQL refuses is refused once, at the edge, for every route.
  {
    name: 'a NUL character in a body string answers 400 PLINTH_HTTP_INVALID_TEXT naming the field',
    request: json({ name: 'a\u0000b', count: 1 }),
    status: 400,
    code: 'PLINTH_HTTP_INVALID_TEXT',
    expect: (body) => assert.deepEqual(failing(body), ['body:name']),
  },
  {
    name: 'an unpaired surrogate anywhere in a body (value or key, at any depth) answers 400 PLINTH_HTTP_INVALID_TEXT',
    request: {
      method: 'POST',
      url: THINGS,
      headers: { 'content-type': 'application/json' },
      payload: '{"name":"\\ud800","count":1,"nested":{"deep":["ok","\\udfff x"]},"k\\u0000":1}',
    },
    status: 400,
    code: 'PLINTH_HTTP_INVALID_TEXT',
    expect: (body) => assert.deepEqual(failing(body), ['body:k\uFFFD', 'body:name', 'body:nested.deep.1']),
  },
  {
    name: 'a NUL character in a path parameter answers 400 PLINTH_HTTP_INVALID_TEXT',
    request: { url: `${THINGS}/a%00b` },
    status: 400,
    code: 'PLINTH_HTTP_INVALID_TEXT',
    expect: (body) => assert.deepEqual(failing(body), ['params:name']),
  },
  {
    name: 'a NUL character in a query-string value answers 400 PLINTH_HTTP_INVALID_TEXT',
    request: { url: `${THINGS}/search?limit=5&q=a%00b` },
    status: 400,
    code: 'PLINTH_HTTP_INVALID_TEXT',
    expect: (body) => assert.deepEqual(failing(body), ['querystring:q']),
  },
  // Issue 9, defect 10: errors Fastify answers before any hook are shaped like every other.
  {
    name: 'a URL whose escapes do not decode answers 400 PLINTH_HTTP_BAD_URL as problem+json with the security headers',
    request: { url: '/%zz' },
    status: 400,
    code: 'PLINTH_HTTP_BAD_URL',
    expect: (_body, res) => assertSecurityHeaders(res),
  },
  {
    name: 'a path parameter encoding an unpaired surrogate answers 400 PLINTH_HTTP_BAD_URL',
    request: { url: `${THINGS}/%ED%A0%80` },
    status: 400,
    code: 'PLINTH_HTTP_BAD_URL',
    expect: (_body, res) => assertSecurityHeaders(res),
  },
  {
    name: 'an over-long path parameter answers 414 PLINTH_HTTP_URI_TOO_LONG as problem+json with the security headers',
    request: { url: `${THINGS}/${'a'.repeat(101)}` },
    status: 414,
    code: 'PLINTH_HTTP_URI_TOO_LONG',
    expect: (_body, res) => assertSecurityHeaders(res),
  },
]

for (const backend of ['embedded', 'postgres'] as const) {
  const pgSkip = backend === 'postgres' ? await skipUnlessPostgres() : false

  describe(`HTTP errors on ${backend}`, { skip: pgSkip }, () => {
    let plinth: TestPlinth
    before(async () => {
      plinth = await startTestPlinth({ backend, modules: [thingsModule], env: { PLINTH_BODY_LIMIT: '4kb' } })
    })
    after(() => plinth?.close())

    it('accepts a valid body (the control for the matrix)', async () => {
      const res = await plinth.app.inject(json({ name: 'valid', count: 0 }))
      assert.equal(res.statusCode, 201, res.body)
      assert.deepEqual(res.json(), { name: 'valid', count: 0 })
    })

    it('accepts text PostgreSQL can store: paired surrogates (emoji), other control characters', async () => {
      const res = await plinth.app.inject(json({ name: 'ok \u{1F600} \u0001 \uFEFF', count: 3 }))
      assert.equal(res.statusCode, 201, res.body)
      assert.equal(res.json().name, 'ok \u{1F600} \u0001 \uFEFF')
    })

    it('answers parser errors and oversized headers on the socket as problem+json with the security headers and a request id', async () => {
      const address = await plinth.app.listen({ port: 0, host: '127.0.0.1' })
      const port = Number(new URL(address).port)
      const cases = [
        [
          `GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`,
          431,
          'PLINTH_HTTP_HEADERS_TOO_LARGE',
        ],
        ['NOT A REQUEST\r\n\r\n', 400, 'PLINTH_HTTP_BAD_REQUEST'],
        [
          'GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n',
          400,
          'PLINTH_HTTP_BAD_REQUEST',
        ],
      ] as const
      for (const [bytes, status, code] of cases) {
        const answer = await rawExchange(port, bytes)
        const [head = '', body = ''] = answer.split('\r\n\r\n')
        const lines = head.split('\r\n')
        assert.match(lines[0] ?? '', new RegExp(`^HTTP/1.1 ${status} `), answer.slice(0, 300))
        const headers = Object.fromEntries(
          lines
            .slice(1)
            .map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]),
        )
        assert.match(String(headers['content-type']), /^application\/problem\+json/)
        assertSecurityHeaders({ headers })
        const problem = JSON.parse(body)
        assert.equal(problem.code, code)
        assert.equal(problem.status, status)
        assert.equal(problem.requestId, headers['x-request-id'])
      }
    })

    it('stores header values PostgreSQL would refuse (User-Agent with NUL or an unpaired surrogate) made storable, not a 500', async () => {
      for (const [agent, stored] of [
        ['probe\u0000agent', 'probe\uFFFDagent'],
        ['lone \uD800 surrogate', 'lone \uFFFD surrogate'],
      ] as const) {
        const res = await plinth.app.inject({
          method: 'POST',
          url: '/api/v1/auth/signup',
          headers: { 'user-agent': agent },
          payload: { email: uniqueEmail('agent'), password: PASSWORD },
        })
        assert.equal(res.statusCode, 201, res.body)
        const me = await plinth.app.inject({ url: '/api/v1/me/sessions', headers: bearer(res.json().token) })
        assert.equal(me.statusCode, 200, me.body)
        assert.deepEqual(
          me.json().sessions.map((x: { userAgent: string }) => x.userAgent),
          [stored],
        )
      }
    })

    it('coerces query strings, which arrive as text, to their declared types', async () => {
      const res = await plinth.app.inject({ url: `${THINGS}/search?limit=5` })
      assert.equal(res.statusCode, 200, res.body)
      assert.deepEqual(res.json(), { limit: 5 })
    })

    for (const s of scenarios) {
      it(s.name, async () => {
        await s.setup?.(plinth)
        const res = await plinth.app.inject(s.request)
        const body = assertProblem(res, s.status, s.code)
        s.expect?.(body, res)
      })
    }

    it('answers 503 PLINTH_DB_UNAVAILABLE with Retry-After when the server ends the connection mid-query', {
      skip: backend === 'embedded' ? 'needs a PostgreSQL server whose backends can be terminated' : false,
    }, async () => {
      const admin = new pg.Client({ connectionString: plinth.config.databaseUrl })
      await admin.connect()
      try {
        const pending = plinth.app.inject({ url: '/api/v1/test/slow-sql' })
        const deadline = Date.now() + 5000
        let terminated = 0
        while (terminated === 0 && Date.now() < deadline) {
          const { rowCount } = await admin.query(
            `select pg_terminate_backend(pid) from pg_stat_activity
             where datname = current_database() and pid <> pg_backend_pid()
               and state = 'active' and query like '%pg_sleep%'`,
          )
          terminated = rowCount ?? 0
          if (terminated === 0) await sleep(20)
        }
        assert.ok(terminated > 0, 'the slow query never showed up in pg_stat_activity')
        const res = await pending
        assertProblem(res, 503, 'PLINTH_DB_UNAVAILABLE')
        assert.match(String(res.headers['retry-after']), /^\d+$/)
      } finally {
        await admin.end()
      }
      // The pool drops the dead connection: the next request gets a fresh one.
      const next = await plinth.app.inject({ url: `${THINGS}/valid` })
      assert.equal(next.statusCode, 200, next.body)
    })
  })

  describe(`HTTP errors in development on ${backend}`, { skip: pgSkip }, () => {
    let plinth: TestPlinth
    before(async () => {
      plinth = await startTestPlinth({
        backend,
        modules: [thingsModule],
        env: { PLINTH_ENV: 'development', PLINTH_LOG_FORMAT: 'json' },
      })
    })
    after(() => plinth?.close())

    it('adds the error message and stack as debug to 500 bodies', async () => {
      const res = await plinth.app.inject('/api/v1/test/boom')
      const body = assertProblem(res, 500, 'PLINTH_INTERNAL')
      const debug = body.debug as { message: string; stack: string }
      assert.equal(debug.message, SECRET_MESSAGE)
      assert.match(debug.stack, /things-module\.ts/)
    })

    it('adds no debug to client errors', async () => {
      const body = assertProblem(await plinth.app.inject('/api/v1/nope'), 404, 'PLINTH_HTTP_NOT_FOUND')
      assert.equal(body.debug, undefined)
    })
  })
}
