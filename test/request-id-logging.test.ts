import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { after, before, describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import type { InjectOptions } from 'fastify'
import { Type } from 'typebox'
import type { PlinthModule } from '../src/core/module.ts'
import { type CapturedLogs, captureLogs } from './helpers/log-capture.ts'
import { skipUnlessPostgres } from './helpers/services.ts'
import { testConfig } from './helpers/test-config.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'
import { thingsModule } from './helpers/things-module.ts'

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/
const LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal']

/** A login-shaped route whose body holds secrets, to prove they never reach the log. */
const loginModule: PlinthModule = {
  name: 'test-login',
  routes(api) {
    api.post(
      '/test/login',
      {
        config: { public: true },
        schema: {
          body: Type.Object(
            { username: Type.String(), password: Type.String(), token: Type.Optional(Type.String()) },
            { additionalProperties: false },
          ),
        },
      },
      async (request) => {
        request.log.info({ username: request.body.username }, 'login attempted')
        return { ok: true }
      },
    )
  },
}

/** Requests that end in each status the id must appear on. */
const byStatus: readonly { status: number; request: InjectOptions }[] = [
  { status: 200, request: { url: '/api/v1' } },
  { status: 404, request: { url: '/api/v1/nope' } },
  { status: 405, request: { method: 'DELETE', url: '/live' } },
  { status: 422, request: { method: 'POST', url: '/api/v1/test/things', payload: {} } },
  { status: 500, request: { url: '/api/v1/test/boom' } },
]

const validIds = ['abc-123', '0f0e7c5e-4d1a-4a2b-9c3d-1e2f3a4b5c6d', 'trace:01HXYZ.a_b', 'a'.repeat(128)]
const invalidIds: readonly [string, string][] = [
  ['longer than 128 characters', 'a'.repeat(129)],
  ['with a space', 'has space'],
  ['with a newline', 'line\nbreak'],
  ['with markup', '<script>alert(1)</script>'],
  ['empty', ''],
  ['with non-ASCII letters', 'ünïcode'],
]

for (const backend of ['embedded', 'postgres'] as const) {
  describe(`request ids and request logs on ${backend}`, {
    skip: backend === 'postgres' ? await skipUnlessPostgres() : false,
  }, () => {
    let plinth: TestPlinth
    let logs: CapturedLogs

    /** The lines logged for one request, once its `request completed` line is written (bounded wait). */
    async function linesOf(request: InjectOptions) {
      const from = logs.lines().length
      const res = await plinth.app.inject(request)
      const id = res.headers['x-request-id']
      const deadline = Date.now() + 2000
      while (
        !logs
          .lines()
          .slice(from)
          .some((l) => l.msg === 'request completed' && l.requestId === id)
      ) {
        assert.ok(Date.now() < deadline, `no "request completed" line for ${id}`)
        await sleep(5)
      }
      return { res, id, lines: logs.lines().slice(from) }
    }

    before(async () => {
      const env = { PLINTH_LOG_LEVEL: 'debug', PLINTH_LOG_BODIES: 'true' }
      logs = captureLogs(testConfig(env), 'debug')
      plinth = await startTestPlinth({
        backend,
        env,
        modules: [thingsModule, loginModule],
        logger: logs.logger,
      })
    })
    after(() => plinth?.close())

    for (const id of validIds) {
      it(`echoes a valid incoming X-Request-Id (${id.slice(0, 40)})`, async () => {
        const res = await plinth.app.inject({ url: '/api/v1', headers: { 'x-request-id': id } })
        assert.equal(res.headers['x-request-id'], id)
      })
    }

    for (const [what, id] of invalidIds) {
      it(`replaces an incoming X-Request-Id ${what} by a generated UUID`, async () => {
        const res = await plinth.app.inject({ url: '/api/v1/nope', headers: { 'x-request-id': id } })
        assert.match(String(res.headers['x-request-id']), UUID)
        assert.equal(res.json().requestId, res.headers['x-request-id'])
      })
    }

    it('generates a fresh UUID per request when none is sent', async () => {
      const a = await plinth.app.inject('/api/v1')
      const b = await plinth.app.inject('/api/v1')
      assert.match(String(a.headers['x-request-id']), UUID)
      assert.notEqual(a.headers['x-request-id'], b.headers['x-request-id'])
    })

    for (const { status, request } of byStatus) {
      it(`sets X-Request-Id on a ${status} response, echoed or generated`, async () => {
        const echoed = await plinth.app.inject({
          ...request,
          headers: { 'x-request-id': `status-${status}` },
        })
        assert.equal(echoed.statusCode, status, echoed.body)
        assert.equal(echoed.headers['x-request-id'], `status-${status}`)
        const generated = await plinth.app.inject(request)
        assert.equal(generated.statusCode, status)
        assert.match(String(generated.headers['x-request-id']), UUID)
        if (status >= 400) assert.equal(generated.json().requestId, generated.headers['x-request-id'])
      })
    }

    it("tags every line of a request with its requestId, including the route's own line", async () => {
      const { lines, id } = await linesOf({
        url: '/api/v1/test/things/widget',
        headers: { 'x-request-id': 'log-line-test' },
      })
      assert.equal(id, 'log-line-test')
      assert.ok(lines.some((l) => l.msg === 'thing looked up' && l.thing === 'widget'))
      for (const line of lines) assert.equal(line.requestId, id, JSON.stringify(line))
    })

    it('writes one "request completed" line with method, route template, status and duration', async () => {
      const { lines, id } = await linesOf({ url: '/api/v1/test/things/gadget' })
      const completed = lines.filter((l) => l.msg === 'request completed')
      assert.equal(completed.length, 1)
      const [line] = completed
      assert.equal(line?.requestId, id)
      assert.equal(line?.method, 'GET')
      assert.equal(line?.route, '/api/v1/test/things/:name')
      assert.equal(line?.statusCode, 200)
      assert.equal(typeof line?.durationMs, 'number')
      assert.ok((line?.durationMs as number) >= 0)
    })

    it('tags the error line of a failing request with its requestId', async () => {
      const { lines, id } = await linesOf({ url: '/api/v1/test/boom' })
      const failed = lines.find((l) => l.msg === 'request failed')
      assert.ok(failed, 'no "request failed" line')
      assert.equal(failed.level, 'error')
      assert.equal(failed.code, 'PLINTH_INTERNAL')
      for (const line of lines) assert.equal(line.requestId, id, JSON.stringify(line))
    })

    it('writes JSON lines with a string level and an ISO time', async () => {
      await linesOf({ url: '/api/v1' })
      const all = logs.lines()
      assert.ok(all.length > 0)
      for (const line of all) {
        assert.ok(LEVELS.includes(line.level as string), `level ${String(line.level)}`)
        assert.equal(typeof line.time, 'string')
        assert.equal(new Date(line.time as string).toISOString(), line.time)
        assert.equal(typeof line.msg, 'string')
      }
    })

    it('never logs the Authorization header, cookies, or password and token body fields', async () => {
      const secret = (name: string) => `${name}-${randomBytes(8).toString('hex')}`
      const auth = secret('authz')
      const cookie = secret('cookie')
      const password = secret('password')
      const token = secret('token')
      const headers = { authorization: `Bearer ${auth}`, cookie: `sid=${cookie}` }
      const { lines, res } = await linesOf({
        method: 'POST',
        url: '/api/v1/test/login',
        headers,
        payload: { username: 'ada', password, token },
      })
      assert.equal(res.statusCode, 200, res.body)
      const bodyLine = lines.find((l) => l.msg === 'request body')
      assert.ok(bodyLine, 'PLINTH_LOG_BODIES=true logged no body')
      assert.deepEqual(bodyLine.body, { username: 'ada', password: '[redacted]', token: '[redacted]' })
      // The failure paths log too (error and rejection lines): none may carry a secret either.
      await linesOf({ url: '/api/v1/test/boom', headers })
      await linesOf({ method: 'POST', url: '/api/v1/test/login', headers, payload: { password, token } })
      const text = logs.text()
      for (const value of [auth, cookie, password, token])
        assert.ok(!text.includes(value), `a secret reached the log: ${value.split('-')[0]}`)
      assert.ok(text.includes('[redacted]'))
    })

    it('never logs second factors: TOTP and recovery codes in the sign-in challenge body (issue 9, defect 12)', async () => {
      const code = String(100_000 + Math.floor(Math.random() * 900_000))
      const recoveryCode = 'abcd-efgh-jkmn-pqrs'
      const challenge = `plc_${randomBytes(32).toString('base64url')}`
      const { lines, res } = await linesOf({
        method: 'POST',
        url: '/api/v1/auth/mfa',
        payload: { challenge, code, recoveryCode },
      })
      assert.equal(res.statusCode, 401, res.body)
      const bodyLine = lines.find((l) => l.msg === 'request body')
      assert.ok(bodyLine, 'PLINTH_LOG_BODIES=true logged no body')
      assert.deepEqual(bodyLine.body, {
        challenge: '[redacted]',
        code: '[redacted]',
        recoveryCode: '[redacted]',
      })
      const text = lines.map((l) => JSON.stringify(l)).join('\n')
      for (const value of [code, recoveryCode, challenge])
        assert.ok(!text.includes(value), 'a second factor reached the log')
      // Error codes stay readable: `code` is redacted in bodies only.
      assert.ok(
        lines.some((l) => typeof l.code === 'string' && l.code.startsWith('PLINTH_AUTH_')),
        'no readable error code',
      )
    })
  })
}
