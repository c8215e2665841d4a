/**
 * Response schemas rewritten for the serializer only (decision 0042): the same JSON out, less work
 * per response.
 *
 * fast-json-stringify serializes an `anyOf` by running ajv on the value against each branch in
 * turn, at every response, to pick the branch. TypeBox writes two common shapes as `anyOf` that
 * need no such choice:
 *
 * - a union of string (or number…) literals, `anyOf: [{ const: 'a', type: 'string' }, …]`: every
 *   branch writes the value the same way, as that type; rewritten `{ type, enum }`;
 * - a nullable scalar, `anyOf: [{ type: 'string', format: 'date-time' }, { type: 'null' }]` (also
 *   with literal branches): rewritten to a type list, `{ type: ['string', 'null'], format }`, which
 *   fast-json-stringify serializes with a `=== null` test before the scalar's own writer.
 *
 * The output is the same for every value the schema allows. What changes is a value the schema
 * does not allow (a status outside its literals): it is written as its type instead of failing the
 * response with a 500 — fast-json-stringify never checked plain `enum`, `format` or `minLength`
 * either; response shapes are checked by the tests, not at run time.
 *
 * Only the serializer's copy changes: the route keeps its schema, so the OpenAPI document, the
 * generated client and request validation see the `anyOf` as written. Shapes other than these two
 * (objects, arrays, `$ref`, mixed types) are left to fast-json-stringify as they are.
 */

type Schema = Record<string, unknown>

const SCALARS = new Set(['string', 'number', 'integer', 'boolean'])
/** Keywords a branch may carry and still be a plain literal or scalar (annotations and string/number constraints). */
const PLAIN_KEYWORDS = new Set([
  'type',
  'const',
  'format',
  'description',
  'title',
  'examples',
  'default',
  'minLength',
  'maxLength',
  'pattern',
  'minimum',
  'maximum',
  'exclusiveMinimum',
  'exclusiveMaximum',
  'multipleOf',
])

const isSchema = (value: unknown): value is Schema =>
  typeof value === 'object' && value !== null && !Array.isArray(value)

const isPlain = (branch: Schema): boolean => Object.keys(branch).every((k) => PLAIN_KEYWORDS.has(k))

/** The flat form of a simple `anyOf`, or undefined when its shape is not one of the two above. */
function flatten(anyOf: unknown[]): Schema | undefined {
  if (anyOf.length < 2 || !anyOf.every(isSchema)) return undefined
  const branches = anyOf as Schema[]
  if (!branches.every(isPlain)) return undefined
  let nullable = false
  const rest: Schema[] = []
  for (const branch of branches) {
    if (branch.type === 'null' && Object.keys(branch).every((k) => k === 'type' || k === 'description')) {
      nullable = true
    } else {
      rest.push(branch)
    }
  }
  if (rest.length === 0) return undefined
  const type = rest[0]!.type
  if (typeof type !== 'string' || !SCALARS.has(type) || rest.some((b) => b.type !== type)) return undefined
  let flat: Schema
  if (rest.every((b) => 'const' in b)) {
    // Literals of one type: the value is written as that type, whichever it is.
    flat = { type, enum: rest.map((b) => b.const) }
  } else if (rest.length === 1 && !('const' in rest[0]!)) {
    // One scalar (the nullable case): its own keywords, format included (date-time writes Dates).
    const { description: _d, title: _t, examples: _e, default: _f, ...own } = rest[0]!
    flat = own
  } else {
    return undefined
  }
  if (!nullable) return flat
  return { ...flat, type: [type, 'null'] }
}

/** Subschema-holding keywords: a single schema, an array of schemas, or a map of name → schema. */
const ONE = ['additionalProperties', 'items', 'not', 'if', 'then', 'else', 'contains', 'propertyNames']
const MANY = ['allOf', 'anyOf', 'oneOf', 'prefixItems']
const MAP = ['properties', 'patternProperties', '$defs', 'definitions', 'dependentSchemas']

/**
 * The schema with every simple `anyOf` flattened; the input is never modified, and objects that need
 * no change are shared, not copied.
 */
export function forSerialization<T>(schema: T): T {
  return rewrite(schema) as T
}

function rewrite(value: unknown): unknown {
  if (!isSchema(value)) return value
  let out: Schema | undefined
  const set = (key: string, next: unknown) => {
    if (next === value[key]) return
    out ??= { ...value }
    out[key] = next
  }
  for (const key of ONE) {
    if (key in value) set(key, rewrite(value[key]))
  }
  for (const key of MANY) {
    const list = value[key]
    if (!Array.isArray(list)) continue
    const next = list.map(rewrite)
    if (next.some((s, i) => s !== list[i])) set(key, next)
  }
  for (const key of MAP) {
    const map = value[key]
    if (!isSchema(map)) continue
    let nextMap: Schema | undefined
    for (const [name, sub] of Object.entries(map)) {
      const next = rewrite(sub)
      if (next !== sub) {
        nextMap ??= { ...map }
        nextMap[name] = next
      }
    }
    if (nextMap) set(key, nextMap)
  }
  const current = out ?? value
  const anyOf = current.anyOf
  if (Array.isArray(anyOf)) {
    const flat = flatten(anyOf)
    if (flat) {
      // The union's own annotations (description…) stay; the anyOf goes.
      const { anyOf: _a, ...siblings } = current
      if (!Object.keys(siblings).some((k) => !PLAIN_KEYWORDS.has(k) || k === 'type' || k === 'const')) {
        return { ...siblings, ...flat }
      }
    }
  }
  return current
}
