import { createRequire } from 'node:module'
import type { FastifySchemaCompiler, FastifySchemaValidationError, FastifySerializerCompiler } from 'fastify'
import { forSerialization } from './serializer-schemas.ts'

/**
 * Route schemas compiled on a route's first use instead of at `app.ready()`.
 *
 * Fastify compiles every route's validators (ajv) and response serializers (fast-json-stringify)
 * while it boots: about 600 ms of a 3 s start, for routes most instances never serve. Here each
 * compiler hands Fastify a stand-in that compiles the real function the first time it runs, then
 * calls it: the same validator (Plinth's, shared/validation.ts) and the same serializer factory
 * (the one Fastify itself uses), so error messages, coercion, defaults and response shapes do not
 * change (the serializer gets its schema with simple unions flattened, serializer-schemas.ts: the
 * same output, fewer checks). What moves is when a broken schema shows: at the route's first request (a 500) instead
 * of at boot. `compileAll()` brings the boot-time check back on demand: test/http-schemas.test.ts
 * calls it on an app with every module, so a schema error still fails the suite.
 */
export interface LazySchemas {
  /** For Fastify's `schemaController.compilersFactory`. */
  readonly compilersFactory: {
    buildValidator: () => FastifySchemaCompiler<unknown>
    buildSerializer: (externalSchemas: unknown, serializerOpts: unknown) => FastifySerializerCompiler<unknown>
  }
  /** Compiles every schema not compiled yet; throws one error naming each route whose schema fails. */
  compileAll(): void
  /** Schemas registered and not compiled yet (or that failed to). */
  readonly pending: number
}

type SerializerFactory = (
  externalSchemas: unknown,
  serializerOpts: unknown,
) => FastifySerializerCompiler<unknown>

/** The serializer factory Fastify would use by default: @fastify/fast-json-stringify-compiler, as Fastify resolves it. */
function defaultSerializerFactory(): SerializerFactory {
  const fromFastify = createRequire(import.meta.resolve('fastify'))
  const SerializerSelector = fromFastify('@fastify/fast-json-stringify-compiler') as () => SerializerFactory
  return SerializerSelector()
}

declare module 'fastify' {
  interface FastifyInstance {
    /**
     * Compiles every route schema not compiled yet (they are otherwise compiled on first use), and
     * throws naming each one that fails: the boot-time check, for tests and `ready` probes.
     */
    compileSchemas(): void
  }
}

interface Pending {
  readonly what: string
  compile(): void
}

export function lazySchemas(validatorCompiler: FastifySchemaCompiler<unknown>): LazySchemas {
  const pending = new Set<Pending>()

  /** `compile` run once, on first need; a failure is remembered and thrown again on every use. */
  const once = <F>(what: string, compile: () => F) => {
    let compiled: F | undefined
    let failure: unknown
    const entry: Pending = {
      what,
      compile: () => {
        get()
      },
    }
    const get = (): F => {
      if (compiled !== undefined) return compiled
      if (failure !== undefined) throw failure
      pending.delete(entry)
      try {
        compiled = compile()
      } catch (err) {
        // Stays listed: compileAll() names it again.
        failure = err
        pending.add(entry)
        throw err
      }
      return compiled
    }
    pending.add(entry)
    return get
  }

  type AjvLike = ((data: unknown, context?: unknown) => boolean) & {
    errors?: FastifySchemaValidationError[] | null
    schemaEnv?: unknown
  }
  const validator: FastifySchemaCompiler<unknown> = (route) => {
    const real = once(`${route.method} ${route.url} ${route.httpPart ?? ''}`.trim(), () => {
      return validatorCompiler(route) as AjvLike
    })
    // Fastify calls an ajv function with the parent data (so that a root value can be coerced) when
    // it has `schemaEnv`, and reads the failures from its `errors`: both are the real function's.
    const standIn = ((data: unknown, context?: unknown) => real()(data, context)) as AjvLike
    Object.defineProperties(standIn, {
      schemaEnv: { get: () => real().schemaEnv },
      errors: { get: () => real().errors },
    })
    return standIn
  }

  const defaults = defaultSerializerFactory()
  const buildSerializer = (externalSchemas: unknown, serializerOpts: unknown) => {
    const compile = defaults(externalSchemas, serializerOpts)
    return ((route: Parameters<FastifySerializerCompiler<unknown>>[0]) => {
      const real = once(`${route.method} ${route.url} response ${route.httpStatus}`, () =>
        compile({ ...route, schema: forSerialization(route.schema) }),
      )
      return (data: unknown) => real()(data)
    }) as FastifySerializerCompiler<unknown>
  }

  return {
    compilersFactory: { buildValidator: () => validator, buildSerializer },
    compileAll() {
      const failures: string[] = []
      for (const entry of [...pending]) {
        try {
          entry.compile()
        } catch (err) {
          failures.push(`${entry.what}: ${err instanceof Error ? err.message : String(err)}`)
        }
      }
      if (failures.length > 0) throw new Error(`route schemas that do not compile:\n${failures.join('\n')}`)
    },
    get pending() {
      return pending.size
    },
  }
}
