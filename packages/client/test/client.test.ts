import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { NO_RATE_LIMITS, PASSWORD, uniqueEmail } from '../../../test/helpers/accounts.ts'
import { skipUnlessPostgres } from '../../../test/helpers/services.ts'
import { startTestPlinth, type TestPlinth } from '../../../test/helpers/test-plinth.ts'
import { createPlinthClient, PlinthApiError } from '../src/index.ts'

/** The promise rejects with a PlinthApiError of this status and code; returns it. */
async function refused(promise: Promise<unknown>, status: number, code: string): Promise<PlinthApiError> {
  const err = await promise.then(
    () => assert.fail(`expected ${status} ${code}, got a success`),
    (e: unknown) => e,
  )
  assert.ok(err instanceof PlinthApiError, String(err))
  assert.equal(err.status, status, err.message)
  assert.equal(err.code, code, err.message)
  assert.ok(err.requestId, 'the error carries the request id')
  return err
}

// A real Plinth on a real port, driven over HTTP by the client as an application would.
const backend = (await skipUnlessPostgres()) === false ? 'postgres' : 'embedded'

describe(`@plinth/client against a running Plinth (${backend})`, () => {
  let plinth: TestPlinth
  let baseUrl: string
  before(async () => {
    plinth = await startTestPlinth({ backend, env: { ...NO_RATE_LIMITS } })
    baseUrl = await plinth.app.listen({ port: 0, host: '127.0.0.1' })
  })
  after(() => plinth?.close())

  it('signs up, keeps the session token, and answers /me, tokens and sessions typed', async () => {
    const client = createPlinthClient({ baseUrl })
    const email = uniqueEmail('client')
    const issued = await client.signUp({ email, password: PASSWORD })
    assert.match(issued.token, /^pls_/)
    assert.equal(client.token, issued.token)
    assert.equal(client.csrfToken, issued.csrfToken)

    const me = await client.me()
    assert.equal(me.user.email, email)
    assert.equal(me.via, 'session')

    const created = await client.post('/api/v1/me/tokens', { body: { name: 'ci', scopes: ['self:read'] } })
    assert.match(created.token, /^plt_/)
    assert.deepEqual(created.scopes, ['self:read'])
    const { tokens } = await client.get('/api/v1/me/tokens')
    assert.deepEqual(
      tokens.map((t) => t.id),
      [created.id],
    )

    const { sessions } = await client.get('/api/v1/me/sessions')
    assert.equal(sessions.filter((s) => s.current).length, 1)

    // The API token on its own client: it reads, and its scope does not reach further.
    const withToken = createPlinthClient({ baseUrl, token: created.token })
    assert.equal((await withToken.me()).via, 'token')
    await refused(
      withToken.post('/api/v1/me/tokens', { body: { name: 'again', scopes: ['self:read'] } }),
      403,
      'PLINTH_AUTH_FORBIDDEN',
    )

    await client.signOut()
    assert.equal(client.token, undefined)
    await refused(client.me(), 401, 'PLINTH_AUTH_REQUIRED')
    await refused(
      createPlinthClient({ baseUrl, token: issued.token }).me(),
      401,
      'PLINTH_AUTH_SESSION_EXPIRED',
    )
  })

  it('turns problem+json answers into PlinthApiError with code, fields and request id', async () => {
    const client = createPlinthClient({ baseUrl })
    const wrong = await refused(
      client.signIn({ email: uniqueEmail('nobody'), password: 'not-the-password' }),
      401,
      'PLINTH_AUTH_INVALID_CREDENTIALS',
    )
    assert.equal(wrong.title, 'Invalid Credentials')
    assert.equal(wrong.problem?.instance, '/api/v1/auth/login')

    const invalid = await refused(
      client.signUp({ email: 'not-an-address', password: PASSWORD }),
      422,
      'PLINTH_HTTP_VALIDATION_FAILED',
    )
    assert.deepEqual(
      invalid.fields.map((f) => [f.in, f.field]),
      [['body', 'email']],
    )
    // The raw openapi-fetch client answers the same problem as data instead of throwing.
    const raw = await client.raw.GET('/api/v1/me')
    assert.equal(raw.response.status, 401)
    assert.equal((raw.error as { code?: string }).code, 'PLINTH_AUTH_REQUIRED')
  })

  it('uses a cookie session with its CSRF token, and the server refuses a change without it', async () => {
    const email = uniqueEmail('cookie')
    await createPlinthClient({ baseUrl }).signUp({ email, password: PASSWORD })

    const browser = createPlinthClient({ baseUrl, auth: 'cookie' })
    const signedIn = await browser.signIn({ email, password: PASSWORD })
    assert.equal(signedIn.mfaRequired, false)
    assert.equal(browser.token, undefined, 'a cookie session sends no bearer token')
    assert.ok(browser.csrfToken)
    assert.equal((await browser.me()).user.email, email)

    // The client adds X-CSRF-Token to changes; a wrong one is refused.
    const created = await browser.post('/api/v1/me/tokens', {
      body: { name: 'cookie', scopes: ['self:read'] },
    })
    assert.match(created.token, /^plt_/)
    const forged = await browser.raw.DELETE('/api/v1/me/tokens/{id}', {
      params: { path: { id: created.id } },
      headers: { 'X-CSRF-Token': 'forged' },
    })
    assert.equal(forged.response.status, 403)
    assert.equal((forged.error as { code?: string }).code, 'PLINTH_AUTH_CSRF')
    await browser.delete('/api/v1/me/tokens/{id}', { params: { path: { id: created.id } } })
    assert.deepEqual((await browser.get('/api/v1/me/tokens')).tokens, [])

    await browser.signOut()
    await refused(browser.me(), 401, 'PLINTH_AUTH_REQUIRED')
  })
})
