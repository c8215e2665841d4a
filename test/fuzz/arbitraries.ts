/**
 * fast-check arbitraries for the schema-driven fuzz suite: "valid-ish" values generated from the
 * JSON Schemas of the app's own OpenAPI document, mixed with hostile ones (NUL, lone surrogates,
 * huge and deep values, wrong types, prototype keys, huge numbers, odd unicode).
 */
import fc from 'fast-check'

// biome-ignore lint/suspicious/noExplicitAny: JSON Schemas from an OpenAPI document are plain JSON
export type Schema = any

/** `arbitrary` with probability `p`, else null (fc.option's `freq` is the odds of null instead). */
export function sometimes<T>(arbitrary: fc.Arbitrary<T>, p: number): fc.Arbitrary<T | null> {
  const weight = Math.round(p * 100)
  return fc.oneof({ arbitrary: fc.constant(null), weight: 100 - weight }, { arbitrary, weight })
}

/** Ids that exist in the fuzzed instance (a user, a job, a schedule, a webhook…), mixed into uuids. */
export interface KnownValues {
  readonly ids: readonly string[]
  readonly jobNames: readonly string[]
}

const HUGE = 'x'.repeat(100_000)
const OVER_LIMIT = 'y'.repeat(1_100_000)

/** Strings that broke (or could break) something further in. */
export const hostileStrings: readonly string[] = [
  'a\u0000b',
  '\u0000',
  '\uD800',
  'x\uDC00y',
  '\uDBFF\uDBFF',
  '\uFEFFbom',
  '\u202Eevil\u202C',
  'e\u0301\u0301\u0301',
  '\u{1F600}\u{1F4A9}',
  '\uFFFF\uFFFE',
  '\u{10FFFF}',
  '𝕏𝕪𝕫',
  '%00',
  '%zz',
  '../../../../etc/passwd',
  "' OR 1=1 --",
  '"; drop table users; --',
  '<script>alert(1)</script>',
  `\${jndi:ldap://x}`,
  '__proto__',
  'constructor',
  '',
  ' ',
  '\t\r\n',
  'null',
  '-1',
  '1e309',
  '0x10',
  'NaN',
  '2026-02-30T25:61:61Z',
  'not-a-uuid',
  '00000000-0000-0000-0000-000000000000',
  'FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF',
  'a@b',
  'http://127.0.0.1:1/x',
  'https://169.254.169.254/latest/meta-data',
  'file:///etc/passwd',
  'javascript:alert(1)',
  '*/5 * * * *',
  '* * * * * * *',
  'Europe/Nowhere',
  'z'.repeat(300),
  HUGE,
]

const hostileNumbers: readonly number[] = [
  0,
  -0,
  -1,
  0.5,
  1e21,
  -1e21,
  1e308,
  -1e308,
  Number.MAX_SAFE_INTEGER + 2,
  Number.MIN_SAFE_INTEGER - 2,
  2 ** 31,
  -(2 ** 31) - 1,
  2 ** 63,
  5e-324,
]

function deepArray(depth: number): unknown {
  let value: unknown = []
  for (let i = 0; i < depth; i++) value = [value]
  return value
}
function deepObject(depth: number): unknown {
  let value: unknown = { leaf: 'a\u0000' }
  for (let i = 0; i < depth; i++) value = { a: value }
  return value
}

/** Values of any type, several of them hostile. */
export const hostileValue: fc.Arbitrary<unknown> = fc.oneof(
  { arbitrary: fc.constantFrom(...hostileStrings), weight: 6 },
  // Text PostgreSQL refuses, somewhere in an otherwise ordinary string.
  {
    arbitrary: fc
      .tuple(
        fc.string({ maxLength: 12 }),
        fc.constantFrom('\u0000', '\uD800', '\uDFFF', '\uDBFF\u0000'),
        fc.string({ maxLength: 12 }),
      )
      .map(([a, bad, b]) => `${a}${bad}${b}`),
    weight: 4,
  },
  { arbitrary: fc.constantFrom(...hostileNumbers), weight: 2 },
  {
    arbitrary: fc.constantFrom<unknown>(
      null,
      true,
      false,
      [],
      {},
      [null],
      ['a\u0000'],
      { '': 1 },
      { 'k\u0000': 1 },
      { '\uD800': 'v' },
    ),
    weight: 2,
  },
  { arbitrary: fc.constantFrom(deepArray(2000), deepObject(500), deepArray(40)), weight: 1 },
  { arbitrary: fc.string({ unit: 'binary', maxLength: 30 }), weight: 2 },
  { arbitrary: fc.string({ unit: 'grapheme', maxLength: 30 }), weight: 1 },
  { arbitrary: fc.jsonValue({ maxDepth: 3 }), weight: 1 },
)

/** Raw request bodies no serializer would write. */
export const hostileRawBodies: readonly string[] = [
  '',
  '{',
  '{"a":',
  'null',
  '[]',
  '"string"',
  '12345678901234567890123456789012345678901234567890',
  '1e999',
  '{"__proto__":{"isAdmin":true}}',
  '{"constructor":{"prototype":{"isAdmin":true}}}',
  '{"a":1,"a":2}',
  '\uFEFF{}',
  '{"a":"\\u0000"}',
  '{"a":"\\ud800"}',
  '{"\\u0000":1}',
  '{"a":"\\uDFFF\\uD800"}',
  `{"a":"${'b'.repeat(50)}"`,
  '[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[',
  `${'['.repeat(50_000)}${']'.repeat(50_000)}`,
  `{"s":"${OVER_LIMIT}"}`,
  'a=1&b=2',
  '<xml/>',
]

const PLAUSIBLE: readonly string[] = [
  '0 3 * * *',
  '*/5 * * * *',
  '0 0 * * 0',
  'UTC',
  'Europe/Paris',
  'America/New_York',
  'fuzz.created',
  'fuzz.*',
  'user.signed_up',
  'jobs:read',
  'jobs:write',
  'audit:read',
  'fuzz',
  'admin',
  'member',
]

const resolver =
  (components: Schema) =>
  (schema: Schema): Schema => {
    let current = schema
    for (let i = 0; i < 10 && current && typeof current.$ref === 'string'; i++) {
      const name = current.$ref.replace('#/components/schemas/', '')
      current = components?.schemas?.[name] ?? {}
    }
    return current ?? {}
  }

const clamp = (value: number | undefined, low: number, high: number, fallback: number) =>
  Math.min(high, Math.max(low, value ?? fallback))

/**
 * An arbitrary for values of `schema` that mostly match it ("valid-ish"): bounded lengths and
 * depths, known ids among uuids, and, with probability `hostility` per value, a hostile value instead.
 */
export function schemaArbitrary(
  schema: Schema,
  known: KnownValues,
  components: Schema,
  hostility = 0.15,
): fc.Arbitrary<unknown> {
  const resolve = resolver(components)
  const build = (raw: Schema, depth: number): fc.Arbitrary<unknown> => {
    const valid = validIsh(resolve(raw), depth)
    if (hostility <= 0) return valid
    const weight = Math.round(hostility * 100)
    return fc.oneof({ arbitrary: valid, weight: 100 - weight }, { arbitrary: hostileValue, weight })
  }
  const validIsh = (s: Schema, depth: number): fc.Arbitrary<unknown> => {
    if (!s || typeof s !== 'object') return fc.jsonValue({ maxDepth: 2 })
    if (Array.isArray(s.enum) && s.enum.length > 0) return fc.constantFrom(...s.enum)
    if ('const' in s) return fc.constant(s.const)
    const alternatives = s.anyOf ?? s.oneOf
    if (Array.isArray(alternatives) && alternatives.length > 0)
      return fc.oneof(...alternatives.map((a: Schema) => build(a, depth)))
    if (Array.isArray(s.allOf) && s.allOf.length > 0) {
      const parts = s.allOf.map(resolve)
      const merged = {
        type: 'object',
        properties: Object.assign({}, ...parts.map((p: Schema) => p.properties ?? {})),
        required: parts.flatMap((p: Schema) => p.required ?? []),
      }
      return validIsh(merged, depth)
    }
    const type = Array.isArray(s.type) ? s.type : s.type ? [s.type] : undefined
    if (type && type.length > 1)
      return fc.oneof(...type.map((t: string) => validIsh({ ...s, type: t }, depth)))
    switch (type?.[0]) {
      case 'string':
        return stringArb(s)
      case 'integer':
        return fc.integer({
          min: clamp(s.minimum, -(2 ** 31), 2 ** 31, -1000),
          max: clamp(s.maximum, -(2 ** 31), 2 ** 31, 1_000_000),
        })
      case 'number':
        return fc.double({
          min: clamp(s.minimum, -1e9, 1e9, -1e6),
          max: clamp(s.maximum, -1e9, 1e9, 1e6),
          noNaN: true,
          noDefaultInfinity: true,
        })
      case 'boolean':
        return fc.boolean()
      case 'null':
        return fc.constant(null)
      case 'array': {
        if (depth > 4) return fc.constant([])
        const minLength = clamp(s.minItems, 0, 5, 0)
        return fc.array(build(s.items ?? {}, depth + 1), {
          minLength,
          maxLength: Math.max(minLength, clamp(s.maxItems, 0, 5, 4)),
        })
      }
      case 'object':
        return objectArb(s, depth)
      default:
        if (s.properties) return objectArb(s, depth)
        return fc.jsonValue({ maxDepth: 3 })
    }
  }
  const objectArb = (s: Schema, depth: number): fc.Arbitrary<unknown> => {
    if (depth > 4) return fc.constant({})
    const properties: Record<string, Schema> = s.properties ?? {}
    const model: Record<string, fc.Arbitrary<unknown>> = {}
    for (const [key, value] of Object.entries(properties)) model[key] = build(value, depth + 1)
    const required = (s.required ?? []).filter((k: string) => k in properties)
    const record =
      Object.keys(model).length > 0 ? fc.record(model, { requiredKeys: required }) : fc.constant({})
    // Now and then a key the schema does not know (additionalProperties false should refuse it).
    return fc
      .tuple(record, sometimes(fc.constantFrom('extra', 'isAdmin', 'role', 'id', 'constructor'), 0.05))
      .map(([value, extra]) => (extra ? { ...(value as object), [extra]: 'x' } : value))
  }
  const stringArb = (s: Schema): fc.Arbitrary<string> => {
    const minLength = clamp(s.minLength, 0, 64, 0)
    const maxLength = Math.max(minLength, clamp(s.maxLength, 0, 64, 40))
    switch (s.format) {
      case 'uuid':
        return known.ids.length > 0 ? fc.oneof(fc.uuid(), fc.constantFrom(...known.ids)) : fc.uuid()
      case 'email':
        return fc.oneof(
          fc.emailAddress().filter((e) => e.length <= (s.maxLength ?? 254)),
          fc.constantFrom('fuzz@example.com', 'ADMIN@example.com', 'a@b.co'),
        )
      case 'date-time':
        return fc
          .date({
            min: new Date('1970-01-01T00:00:00Z'),
            max: new Date('2100-01-01T00:00:00Z'),
            noInvalidDate: true,
          })
          .map((d) => d.toISOString())
      case 'date':
        return fc
          .date({
            min: new Date('1970-01-01T00:00:00Z'),
            max: new Date('2100-01-01T00:00:00Z'),
            noInvalidDate: true,
          })
          .map((d) => d.toISOString().slice(0, 10))
      case 'uri':
      case 'url':
        // IP literals and reserved names only: no DNS lookups from the fuzz run.
        return fc.constantFrom(
          'https://93.184.215.14/hook',
          'https://10.0.0.1/hook',
          'http://127.0.0.1:9/hook',
          'https://[::1]/x',
          'https://user:pass@93.184.215.14/',
          'https://hook.invalid/x',
          'ftp://93.184.215.14/',
          'https://93.184.215.14:99999/',
        )
    }
    // Values a route accepts more often than random text does (cron expressions, time zones,
    // event types, scopes, names), kept when they fit the schema's pattern and lengths.
    let pattern: RegExp | undefined
    try {
      pattern = typeof s.pattern === 'string' ? new RegExp(s.pattern) : undefined
    } catch {
      pattern = undefined
    }
    const plausible = [...known.jobNames, ...PLAUSIBLE].filter(
      (v) => v.length >= minLength && v.length <= (s.maxLength ?? 10_000) && (!pattern || pattern.test(v)),
    )
    const main =
      typeof s.pattern === 'string'
        ? // The schema's own maxLength, not the 64 cap above: a pattern may need more (a filter that
          // can never pass makes fast-check retry forever, a hang of the fuzzer itself).
          patterned(s.pattern, s.maxLength ?? 10_000)
        : fc.string({ minLength, maxLength, unit: 'grapheme' })
    return plausible.length > 0 ? fc.oneof(main, fc.constantFrom(...plausible)) : main
  }
  // The top level itself stays valid-ish: whole hostile bodies are the caller's choice.
  return validIsh(resolve(schema), 0)
}

function patterned(pattern: string, maxLength: number): fc.Arbitrary<string> {
  try {
    return fc.stringMatching(new RegExp(pattern)).filter((v) => v.length <= Math.max(maxLength, 1))
  } catch {
    return fc.string({ maxLength })
  }
}

/**
 * `text` percent-encoded for a URL, lone surrogates included (as their WTF-8 bytes, which a
 * decoder must refuse), so that any generated string can be sent in a path or query string.
 */
export function encodeAny(text: string): string {
  let out = ''
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i)
    if (unit >= 0xd800 && unit <= 0xdbff && i + 1 < text.length) {
      const next = text.charCodeAt(i + 1)
      if (next >= 0xdc00 && next <= 0xdfff) {
        out += encodeURIComponent(text.slice(i, i + 2))
        i++
        continue
      }
    }
    if (unit >= 0xd800 && unit <= 0xdfff) {
      const bytes = [0xe0 | (unit >> 12), 0x80 | ((unit >> 6) & 0x3f), 0x80 | (unit & 0x3f)]
      out += bytes.map((b) => `%${b.toString(16).toUpperCase()}`).join('')
      continue
    }
    out += encodeURIComponent(text[i]!)
  }
  return out
}

/** A value as it travels in a path or query string. */
export function asText(value: unknown): string {
  if (typeof value === 'string') return value
  if (value === null || value === undefined) return ''
  if (typeof value === 'object') return JSON.stringify(value).slice(0, 5000)
  return String(value)
}
