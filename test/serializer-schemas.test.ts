import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import { after, before, describe, it } from 'node:test'
import { type TSchema, Type } from 'typebox'
import { forSerialization } from '../src/http/serializer-schemas.ts'
import { bearer, signUp, uniqueEmail } from './helpers/accounts.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'

// fast-json-stringify as Fastify resolves it: the serializer both forms are compiled with.
const fromFastify = createRequire(import.meta.resolve('fastify'))
const fjs = fromFastify('fast-json-stringify') as (schema: unknown) => (data: unknown) => string

const DateTime = Type.String({ format: 'date-time' })
const Status = Type.Union([Type.Literal('active'), Type.Literal('disabled')])
const json = (value: unknown) => JSON.parse(JSON.stringify(value))

/** Serializes every value with the schema as written and as flattened: the same text, or the same failure. */
function assertSameOutput(schema: TSchema, values: unknown[]) {
  const asWritten = fjs(schema)
  const flattened = fjs(forSerialization(schema))
  for (const value of values) {
    let expected: string | Error
    try {
      expected = asWritten(value)
    } catch (err) {
      expected = err as Error
    }
    if (expected instanceof Error) continue // a value the schema does not allow: see the last test
    assert.equal(flattened(value), expected, `value ${String(value)}`)
  }
}

describe('response schemas flattened for the serializer', () => {
  it('writes a union of literals as an enum and a nullable scalar as a type list', () => {
    assert.deepEqual(json(forSerialization(Status)), { type: 'string', enum: ['active', 'disabled'] })
    assert.deepEqual(json(forSerialization(Type.Union([DateTime, Type.Null()]))), {
      type: ['string', 'null'],
      format: 'date-time',
    })
    assert.deepEqual(json(forSerialization(Type.Union([Type.Integer(), Type.Null()]))), {
      type: ['integer', 'null'],
    })
    assert.deepEqual(
      json(forSerialization(Type.Union([Type.Literal('a'), Type.Literal('b'), Type.Null()]))),
      {
        type: ['string', 'null'],
        enum: ['a', 'b'],
      },
    )
    // Inside objects and arrays, at any depth; the union's own description stays.
    const nested = Type.Object({
      items: Type.Array(Type.Object({ at: Type.Union([DateTime, Type.Null()], { description: 'when' }) })),
    })
    assert.deepEqual(json(forSerialization(nested)).properties.items.items.properties.at, {
      description: 'when',
      type: ['string', 'null'],
      format: 'date-time',
    })
  })

  it('leaves every other union as written and never modifies the route schema', () => {
    const objects = Type.Union([Type.Object({ a: Type.String() }), Type.Object({ b: Type.Integer() })])
    const mixed = Type.Union([Type.String(), Type.Integer()])
    const literalAndString = Type.Union([Type.Literal('x'), Type.String()])
    const refd = { anyOf: [{ $ref: 'thing#' }, { type: 'null' }] }
    for (const schema of [objects, mixed, literalAndString, refd]) {
      assert.equal(forSerialization(schema), schema)
    }
    const route = Type.Object({ status: Status, plain: Type.String() })
    const before = JSON.stringify(route)
    const out = forSerialization(route)
    assert.notEqual(out, route)
    assert.equal(JSON.stringify(route), before)
    // What needs no change is shared, not copied.
    assert.equal((out as typeof route).properties.plain, route.properties.plain)
  })

  it('gives the same text as the schema as written, for every value the schema allows', () => {
    const at = new Date('2026-12-06T13:00:00.123Z')
    assertSameOutput(Type.Union([DateTime, Type.Null()]), [at, at.toISOString(), null])
    assertSameOutput(Type.Union([Type.String(), Type.Null()]), ['x', '', 'quote " and \\ and \n', null])
    assertSameOutput(Type.Union([Type.Integer(), Type.Null()]), [0, -3, 2 ** 40, null])
    assertSameOutput(Type.Union([Type.Number(), Type.Null()]), [0.5, -1e-9, 7, null])
    assertSameOutput(Type.Union([Type.Boolean(), Type.Null()]), [true, false, null])
    assertSameOutput(Status, ['active', 'disabled'])
    assertSameOutput(Type.Union([Type.Literal(1), Type.Literal(2)]), [1, 2])
    assertSameOutput(
      Type.Object({
        user: Type.Object({ status: Status, lastLoginAt: Type.Union([DateTime, Type.Null()]) }),
        via: Type.Union([Type.Literal('session'), Type.Literal('token')]),
        csrfToken: Type.Union([Type.String(), Type.Null()]),
      }),
      [
        { user: { status: 'active', lastLoginAt: at }, via: 'session', csrfToken: 'c' },
        { user: { status: 'disabled', lastLoginAt: null }, via: 'token', csrfToken: null },
        { user: { status: 'active' }, via: 'token' },
      ],
    )
  })

  it('writes a value outside the literals as its type instead of failing the response', () => {
    assert.throws(() => fjs(Status)('archived'), /does not match schema definition/)
    assert.equal(fjs(forSerialization(Status))('archived'), '"archived"')
  })
})

describe('built-in routes answer the same bodies with flattened serializers', () => {
  let plinth: TestPlinth
  before(async () => {
    plinth = await startTestPlinth()
  })
  after(() => plinth?.close())

  it('/me, /me/sessions and /me/tokens: each body is what the schema as written gives for it', async () => {
    const session = await signUp(plinth.app, uniqueEmail('serializer'))
    const token = await plinth.app.inject({
      method: 'POST',
      url: '/api/v1/me/tokens',
      headers: { ...bearer(session.token), 'x-csrf-token': session.csrfToken },
      payload: { name: 'serializer test', scopes: ['self:read'] },
    })
    assert.equal(token.statusCode, 201, token.body)
    const api = plinth.app.swagger() as {
      paths: Record<string, { get: { responses: Record<string, unknown> } }>
    }
    for (const [url, headers] of [
      ['/me', bearer(session.token)],
      ['/me', { cookie: session.cookie }],
      ['/me/sessions', bearer(session.token)],
      ['/me/tokens', bearer(session.token)],
    ] as const) {
      const res = await plinth.app.inject({ url: `/api/v1${url}`, headers })
      assert.equal(res.statusCode, 200, res.body)
      const response = api.paths[`/api/v1${url}`]!.get.responses['200'] as {
        content: Record<string, { schema: unknown }>
      }
      const schema = response.content['application/json']!.schema
      assert.equal(fjs(schema)(res.json()), res.body, url)
    }
  })
})
