import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import type { FastifySchemaCompiler } from 'fastify'
import type { PlinthModule } from '../src/core/module.ts'
import { lazySchemas } from '../src/http/lazy-schemas.ts'
import { createValidatorCompiler } from '../src/shared/validation.ts'
import { assertProblem } from './helpers/assert-problem.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'

/** A route whose body schema ajv refuses to compile (an unknown type). */
const brokenModule: PlinthModule = {
  name: 'broken-schema',
  routes(api) {
    api.post(
      '/test/broken-schema',
      {
        config: { public: true },
        schema: { body: { type: 'object', properties: { a: { type: 'no-such-type' } } } as never },
      },
      async () => ({ ok: true }),
    )
  },
}

describe('route schemas, compiled on first use', () => {
  let plinth: TestPlinth
  before(async () => {
    plinth = await startTestPlinth({ modules: [brokenModule] })
    await plinth.app.ready()
  })
  after(() => plinth?.close())

  // The boot-time check Fastify did eagerly: every route of every built-in module compiles. A
  // schema error in any of them fails here, naming the route.
  it('compiles every route schema of the built-in modules; the broken one is named', () => {
    assert.throws(
      () => plinth.app.compileSchemas(),
      (err: Error) => {
        const lines = err.message.split('\n').slice(1)
        assert.deepEqual(
          lines.map((l) => l.slice(0, l.indexOf(':'))),
          ['POST /api/v1/test/broken-schema body'],
          err.message,
        )
        assert.match(lines[0]!, /no-such-type|must be equal to one of the allowed values|unknown type/)
        return true
      },
    )
    // Everything else is compiled now: a second pass finds only the broken one again (remembered).
    assert.throws(() => plinth.app.compileSchemas(), /broken-schema body/)
  })

  it('answers a request to a route whose schema does not compile with a 500 problem, not a crash', async () => {
    const res = await plinth.app.inject({
      method: 'POST',
      url: '/api/v1/test/broken-schema',
      payload: { a: 1 },
    })
    assertProblem(res, 500, 'PLINTH_INTERNAL')
    // And the instance goes on serving.
    assert.equal((await plinth.app.inject('/api/v1')).statusCode, 200)
  })
})

describe('lazySchemas', () => {
  it('compiles a validator once, on its first call, and reports its errors and coercion as ajv does', () => {
    let compiles = 0
    const real = createValidatorCompiler()
    const counting: FastifySchemaCompiler<unknown> = (route) => {
      compiles++
      return real(route)
    }
    const lazy = lazySchemas(counting)
    const compiler = lazy.compilersFactory.buildValidator()
    const route = {
      schema: { type: 'object', properties: { limit: { type: 'integer', minimum: 1 } }, required: ['limit'] },
      method: 'GET',
      url: '/x',
      httpPart: 'querystring',
    }
    const validate = compiler(route) as ((data: unknown) => boolean) & { errors?: unknown[] }
    assert.equal(compiles, 0, 'compiled before its first use')
    assert.equal(lazy.pending, 1)
    const query = { limit: '10' }
    assert.equal(validate(query), true)
    assert.deepEqual(query, { limit: 10 }, 'a query string is coerced as before')
    assert.equal(validate({ limit: '0' }), false)
    const eager = real(route) as ((data: unknown) => boolean) & { errors?: unknown[] }
    eager({ limit: '0' })
    assert.deepEqual(validate.errors, eager.errors)
    assert.equal(compiles, 1)
    assert.equal(lazy.pending, 0)
  })

  it('serializes a response as fast-json-stringify does, compiling on the first response', () => {
    const lazy = lazySchemas(createValidatorCompiler())
    const compile = lazy.compilersFactory.buildSerializer({}, {})
    const serialize = compile({
      schema: { type: 'object', properties: { name: { type: 'string' }, n: { type: 'integer' } } },
      method: 'GET',
      url: '/x',
      httpStatus: '200',
    })
    assert.equal(lazy.pending, 1)
    // Fields outside the schema are dropped, as before.
    assert.equal(serialize({ name: 'a', n: 2, secret: 'x' }), '{"name":"a","n":2}')
    assert.equal(lazy.pending, 0)
    lazy.compileAll()
  })
})
