import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { Type } from 'typebox'
import {
  createCoercingAjv,
  createStrictAjv,
  createValidatorCompiler,
  fieldErrors,
  isTypeBoxBuilt,
  MAX_FIELD_ERRORS,
} from './validation.ts'

const schema = {
  type: 'object',
  properties: {
    limit: { type: 'integer', default: 10 },
    email: { type: 'string', format: 'email' },
  },
  required: ['email'],
  additionalProperties: false,
}

describe('validators', () => {
  it('bodies are strict: "7" is not a number; path, query and headers are coerced from text', () => {
    const compile = createValidatorCompiler()
    const body = compile({ schema, method: 'POST', url: '/x', httpPart: 'body' })
    const query = compile({ schema, method: 'GET', url: '/x', httpPart: 'querystring' })
    assert.equal(body({ email: 'a@example.com', limit: '7' }), false)
    const q = { email: 'a@example.com', limit: '7' }
    assert.equal(query(q), true)
    assert.equal(q.limit, 7)
  })

  it('fill defaults, check formats, and refuse unknown fields instead of dropping them', () => {
    const strict = createStrictAjv().compile(schema)
    const withDefault: Record<string, unknown> = { email: 'a@example.com' }
    assert.equal(strict(withDefault), true)
    assert.equal(withDefault.limit, 10)
    assert.equal(strict({ email: 'not an address' }), false)
    const extra = { email: 'a@example.com', admin: true }
    assert.equal(strict(extra), false)
    assert.equal(extra.admin, true)
  })

  it('the coercing validator (CSV imports) turns text into the schema’s types', () => {
    const row: Record<string, unknown> = { email: 'a@example.com', limit: '42' }
    assert.equal(createCoercingAjv().compile(schema)(row), true)
    assert.equal(row.limit, 42)
  })
})

describe('fieldErrors', () => {
  it('names the field of each issue, a missing or unknown property included', () => {
    const validate = createStrictAjv().compile(schema)
    validate({ limit: 'x', admin: 1 })
    assert.deepEqual(
      fieldErrors('body', validate.errors ?? []).sort((a, b) => a.field.localeCompare(b.field)),
      [
        { in: 'body', field: 'admin', message: 'is not allowed' },
        { in: 'body', field: 'email', message: "must have required property 'email'" },
        { in: 'body', field: 'limit', message: 'must be integer' },
      ],
    )
  })

  it('nests paths with dots, and says "is invalid" for an issue without a message or path', () => {
    assert.deepEqual(
      fieldErrors('query', [
        { instancePath: '/filter/0/name', message: 'must be string' },
        {},
        { params: {} },
      ]),
      [
        { in: 'query', field: 'filter.0.name', message: 'must be string' },
        { in: 'query', field: '', message: 'is invalid' },
        { in: 'query', field: '', message: 'is invalid' },
      ],
    )
  })

  it('reports at most MAX_FIELD_ERRORS issues', () => {
    const issues = Array.from({ length: MAX_FIELD_ERRORS + 5 }, (_, i) => ({
      instancePath: `/f${i}`,
      message: 'x',
    }))
    const errors = fieldErrors('body', issues)
    assert.equal(errors.length, MAX_FIELD_ERRORS)
    assert.equal(errors.at(-1)?.field, `f${MAX_FIELD_ERRORS - 1}`)
  })
})

describe('isTypeBoxBuilt', () => {
  it("is true when TypeBox's builders made every node, whatever the nesting", () => {
    const built = Type.Object(
      {
        name: Type.String({ minLength: 1 }),
        tags: Type.Array(Type.Union([Type.Literal('a'), Type.Null()])),
        counts: Type.Record(Type.String(), Type.Integer()),
        pair: Type.Tuple([Type.String(), Type.Number()]),
        both: Type.Intersect([Type.Object({ a: Type.String() }), Type.Object({ b: Type.String() })]),
        maybe: Type.Optional(Type.Unknown()),
      },
      { additionalProperties: false },
    )
    assert.equal(isTypeBoxBuilt(built), true)
    assert.equal(isTypeBoxBuilt(true), true)
    // TypeBox shares a node used twice: no cycle.
    const id = Type.String()
    assert.equal(isTypeBoxBuilt(Type.Object({ a: id, b: Type.Array(id) })), true)
  })

  it('is false for a hand-written node or a Type.Unsafe anywhere, and for what is no schema', () => {
    const handWritten = { type: 'object', properties: { a: { type: 'string' } } }
    assert.equal(isTypeBoxBuilt(handWritten), false)
    assert.equal(isTypeBoxBuilt(Type.Object({ a: Type.Unsafe({ type: 'no-such-type' }) })), false)
    // A plain object put inside a TypeBox-built one (a copy loses the hidden marks).
    const inner = { ...Type.String() }
    assert.equal(isTypeBoxBuilt(Type.Object({ a: inner as never })), false)
    assert.equal(isTypeBoxBuilt(Type.Array(inner as never)), false)
    assert.equal(isTypeBoxBuilt(Type.Union([Type.String(), inner as never])), false)
    const badMap = Type.Object({})
    Object.assign(badMap, { properties: 'oops' })
    assert.equal(isTypeBoxBuilt(badMap), false)
    for (const x of [null, undefined, 'string', 7, []]) assert.equal(isTypeBoxBuilt(x), false)
    // A node that contains itself ends the walk (and is left to Ajv), rather than the stack.
    const cyclic = Type.Object({ a: Type.String() })
    Object.assign(cyclic.properties, { self: cyclic })
    assert.equal(isTypeBoxBuilt(cyclic), false)
  })
})
