import { Ajv, type Options } from 'ajv'
import addFormatsModule, { type FormatsPlugin } from 'ajv-formats'
import fastUri from 'fast-uri'
import type { FastifySchemaCompiler } from 'fastify'
import type { FieldError } from './errors.ts'

// ajv-formats is CommonJS with a default export; under ESM the function sits on `.default`.
const addFormats: FormatsPlugin =
  (addFormatsModule as unknown as { default?: FormatsPlugin }).default ??
  (addFormatsModule as unknown as FormatsPlugin)

const base: Options = {
  useDefaults: true,
  // Unknown fields are refused (schemas say additionalProperties: false), never silently dropped.
  removeAdditional: false,
  // Report every failing field at once; bodies are bounded by PLINTH_BODY_LIMIT and the HTTP layer
  // reports at most MAX_FIELD_ERRORS of them.
  allErrors: true,
  uriResolver: fastUri,
  addUsedSchema: false,
  strict: false,
}

/**
 * Two validators: bodies are checked strictly (JSON has real types: `"7"` is not a number), while
 * path, query string and headers, which arrive as text, are coerced (`?limit=10` becomes 10).
 */
export function createValidatorCompiler(): FastifySchemaCompiler<unknown> {
  // Each made at its first schema (routes compile theirs lazily): an Ajv with its formats costs
  // ~10-20 ms to build, which a start would otherwise pay before it listens.
  let strict: Ajv | undefined
  let coercing: Ajv | undefined
  return ({ schema, httpPart }) => {
    if (httpPart === 'body') {
      strict ??= createStrictAjv()
      return strict.compile(schema as object)
    }
    coercing ??= addFormats(new Ajv({ ...base, coerceTypes: 'array' }))
    return coercing.compile(schema as object)
  }
}

/** The strict (non-coercing) validator bodies get, for payloads validated outside a route (job payloads). */
export function createStrictAjv(): Ajv {
  return addFormats(new Ajv({ ...base, coerceTypes: false }))
}

/** Keywords whose value is one subschema, a list of them, or a map of names to them. */
const ONE_SUBSCHEMA = [
  'not',
  'if',
  'then',
  'else',
  'items',
  'additionalItems',
  'additionalProperties',
  'contains',
  'propertyNames',
  'unevaluatedItems',
  'unevaluatedProperties',
]
const SUBSCHEMA_LISTS = ['allOf', 'anyOf', 'oneOf', 'prefixItems', 'items']
const SUBSCHEMA_MAPS = ['properties', 'patternProperties', '$defs', 'definitions', 'dependentSchemas']

/**
 * Whether every node of `schema` was built by TypeBox's own builders (`Type.Object`, `Type.String`
 * …; they mark each node with a hidden `~kind`), with no `Type.Unsafe` and no hand-written part.
 * Such a schema has JSON Schema's structure by construction; only the values of its options
 * (`minLength`, `pattern` …) can still be wrong, and Ajv checks those when it compiles the schema.
 * Should a TypeBox release stop marking its nodes this way, every schema answers false and is
 * checked against the meta-schema, as any hand-written one: slower, never laxer.
 */
export function isTypeBoxBuilt(schema: unknown, ancestors = new Set<object>()): boolean {
  if (typeof schema === 'boolean') return true
  if (typeof schema !== 'object' || schema === null || Array.isArray(schema)) return false
  if (!Object.hasOwn(schema, '~kind') || Object.hasOwn(schema, '~unsafe')) return false
  // A schema that contains itself is no JSON Schema TypeBox builds: Ajv has the last word. (One
  // node used in several places, as TypeBox shares them, is no cycle.)
  if (ancestors.has(schema)) return false
  ancestors.add(schema)
  try {
    const node = schema as Record<string, unknown>
    const built = (value: unknown) => isTypeBoxBuilt(value, ancestors)
    for (const key of ONE_SUBSCHEMA) {
      const value = node[key]
      if (value !== undefined && !Array.isArray(value) && !built(value)) return false
    }
    for (const key of SUBSCHEMA_LISTS) {
      const value = node[key]
      if (Array.isArray(value) && !value.every(built)) return false
    }
    for (const key of SUBSCHEMA_MAPS) {
      const value = node[key]
      if (value === undefined) continue
      if (typeof value !== 'object' || value === null || !Object.values(value).every(built)) return false
    }
    return true
  } finally {
    ancestors.delete(schema)
  }
}

/** A validator that coerces text to the schema's types (`"7"` → 7), as query strings are: for CSV imports. */
export function createCoercingAjv(): Ajv {
  return addFormats(new Ajv({ ...base, coerceTypes: true }))
}

export interface AjvIssue {
  instancePath?: string
  message?: string
  params?: Record<string, unknown>
}

/** At most this many failing fields are reported in one response. */
export const MAX_FIELD_ERRORS = 20

/** Ajv's issues as the `errors` of a problem response (`{ in, field, message }`), at most MAX_FIELD_ERRORS. */
export function fieldErrors(context: string, issues: readonly AjvIssue[]): FieldError[] {
  return issues.slice(0, MAX_FIELD_ERRORS).map((issue) => {
    const path = (issue.instancePath ?? '').split('/').filter(Boolean)
    const extra = issue.params?.missingProperty ?? issue.params?.additionalProperty
    if (typeof extra === 'string') path.push(extra)
    const message = issue.params?.additionalProperty ? 'is not allowed' : (issue.message ?? 'is invalid')
    return { in: context, field: path.join('.'), message }
  })
}
