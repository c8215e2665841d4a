import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { PlinthError } from '../../shared/errors.ts'
import { toPlinthError } from './problem-json.ts'

/** An error as Fastify, its plugins or the pg driver throw it. */
const thrown = (message: string, fields: Record<string, unknown> = {}) =>
  Object.assign(new Error(message), fields)

describe('toPlinthError: whatever a request threw, as a registered problem', () => {
  it('keeps a PlinthError as it is', () => {
    const original = new PlinthError('PLINTH_HTTP_NOT_FOUND')
    assert.equal(toPlinthError(original), original)
  })

  it('turns schema failures into 422 for bodies and 400 for the rest, with the fields', () => {
    const validation = [{ instancePath: '/limit', message: 'must be integer' }]
    const body = toPlinthError(
      thrown('body/limit must be integer', { validation, validationContext: 'body' }),
    )
    assert.equal(body.code, 'PLINTH_HTTP_VALIDATION_FAILED')
    assert.deepEqual(body.errors, [{ in: 'body', field: 'limit', message: 'must be integer' }])
    const query = toPlinthError(thrown('x', { validation, validationContext: 'querystring' }))
    assert.equal(query.code, 'PLINTH_HTTP_INVALID_REQUEST')
    assert.equal(query.errors?.[0]?.in, 'querystring')
    assert.equal(
      toPlinthError(thrown('x', { validation })).code,
      'PLINTH_HTTP_VALIDATION_FAILED',
      'no context: the body',
    )
  })

  it('maps Fastify’s own refusals, and asks an overloaded client to come back in 10 s', () => {
    const overloaded = toPlinthError(
      thrown('Service Unavailable', { code: 'FST_UNDER_PRESSURE', statusCode: 503 }),
    )
    assert.equal(overloaded.code, 'PLINTH_HTTP_OVERLOADED')
    assert.deepEqual(overloaded.headers, { 'retry-after': '10' })
    const large = toPlinthError(
      thrown('Request body is too large', { code: 'FST_ERR_CTP_BODY_TOO_LARGE', statusCode: 413 }),
    )
    assert.equal(large.code, 'PLINTH_HTTP_BODY_TOO_LARGE')
    assert.equal(
      toPlinthError(thrown('bad', { code: 'FST_ERR_CTP_INVALID_MEDIA_TYPE', statusCode: 415 })).code,
      'PLINTH_HTTP_UNSUPPORTED_MEDIA_TYPE',
    )
  })

  it('calls a JSON syntax error in the body a malformed body', () => {
    const syntax = Object.assign(new SyntaxError('Unexpected token } in JSON at position 7'), {
      statusCode: 400,
    })
    assert.equal(toPlinthError(syntax).code, 'PLINTH_HTTP_MALFORMED_BODY')
    assert.equal(
      toPlinthError(new SyntaxError('a bug in our code')).code,
      'PLINTH_INTERNAL',
      'not from the client',
    )
  })

  it('translates database errors: a conflict as it is, a database away with Retry-After', () => {
    const conflict = toPlinthError(
      thrown('duplicate key value violates unique constraint', { code: '23505' }),
    )
    assert.equal(conflict.code, 'PLINTH_DB_CONFLICT')
    const away = toPlinthError(
      thrown('terminating connection due to administrator command', { code: '57P01' }),
    )
    assert.equal(away.code, 'PLINTH_DB_UNAVAILABLE')
    assert.deepEqual(away.headers, { 'retry-after': '5' })
  })

  it('keeps the meaning of other statuses: a timeout, shutting down, a client error with its safe message', () => {
    assert.equal(toPlinthError(thrown('timeout', { statusCode: 408 })).code, 'PLINTH_HTTP_REQUEST_TIMEOUT')
    assert.equal(
      toPlinthError(thrown('closing', { code: 'FST_ERR_SERVER_CLOSING', statusCode: 503 })).code,
      'PLINTH_HTTP_SHUTTING_DOWN',
    )
    const client = toPlinthError(thrown("Header 'x' is invalid", { statusCode: 431 }))
    assert.equal(client.code, 'PLINTH_HTTP_CLIENT_ERROR')
    assert.equal(client.status, 431)
    assert.equal(client.message, "Header 'x' is invalid")
  })

  it('calls anything else an internal error (500), keeping the cause for the log but not the message', () => {
    const bug = new TypeError("Cannot read properties of undefined (reading 'id')")
    const internal = toPlinthError(bug)
    assert.equal(internal.code, 'PLINTH_INTERNAL')
    assert.equal(internal.status, 500)
    assert.equal(internal.cause, bug)
    assert.doesNotMatch(internal.message, /reading 'id'/)
    assert.equal(toPlinthError(thrown('upstream', { statusCode: 502 })).code, 'PLINTH_INTERNAL')
  })
})
