import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { type FieldError, PlinthError } from '../../shared/errors.ts'
import { MAX_FIELD_ERRORS } from './problem-json.ts'

/**
 * True when `text` can be stored as PostgreSQL text and jsonb: no NUL character and no unpaired
 * UTF-16 surrogate (U+D800–U+DFFF, which has no UTF-8 form). PostgreSQL refuses both, so a
 * request carrying them would otherwise fail deep inside a module.
 */
export function isStorableText(text: string): boolean {
  return text.isWellFormed() && !text.includes('\0')
}

/** `text` with every NUL and unpaired surrogate replaced by U+FFFD. */
export function toStorableText(text: string): string {
  return text.toWellFormed().replaceAll('\0', '\uFFFD')
}

/**
 * The fields of `value` (strings, and object keys, at any depth) that are not storable text.
 * Iterative, so that a deeply nested body (JSON.parse accepts any depth) cannot exhaust the stack.
 */
export function unstorableFields(where: string, value: unknown, max = MAX_FIELD_ERRORS): FieldError[] {
  const found: FieldError[] = []
  const stack: [unknown, string][] = [[value, '']]
  while (stack.length > 0 && found.length < max) {
    const [current, path] = stack.pop()!
    if (typeof current === 'string') {
      if (!isStorableText(current)) found.push({ in: where, field: path, message: MESSAGE })
    } else if (current !== null && typeof current === 'object') {
      if (Array.isArray(current)) {
        for (let i = current.length - 1; i >= 0; i--)
          stack.push([current[i], path ? `${path}.${i}` : String(i)])
      } else if (isPlainObject(current)) {
        // Plain objects only: a Buffer or stream body (a route's own parser) is not text.
        for (const key of Object.keys(current)) {
          const child = path ? `${path}.${key}` : key
          if (!isStorableText(key)) {
            found.push({ in: where, field: toStorableText(child), message: KEY_MESSAGE })
            if (found.length >= max) break
            continue
          }
          stack.push([(current as Record<string, unknown>)[key], child])
        }
      }
    }
  }
  return found
}

/** Parsed data (JSON, query and path objects, whatever their prototype), not a Buffer or a stream. */
function isPlainObject(value: object): boolean {
  return !ArrayBuffer.isView(value) && typeof (value as { pipe?: unknown }).pipe !== 'function'
}

/** No value, or an object without a single key of its own. */
function isEmpty(value: unknown): boolean {
  if (value === undefined || value === null) return true
  if (typeof value !== 'object' || Array.isArray(value) || !isPlainObject(value)) return false
  for (const _ in value) return false
  return true
}

const MESSAGE = 'holds a NUL character or an unpaired surrogate'
const KEY_MESSAGE = 'is a key holding a NUL character or an unpaired surrogate'

/**
 * Refuses, once for every route, text PostgreSQL cannot store: a NUL character or an unpaired
 * surrogate in a path parameter, a query-string value or a body string (keys included) answers
 * 400 `PLINTH_HTTP_INVALID_TEXT` naming the fields, before validation and before any handler.
 * Header values are not refused but made storable (U+FFFD) in `onRequest`: modules record some
 * of them (User-Agent in sessions and audit rows).
 */
async function textGuard(app: FastifyInstance): Promise<void> {
  app.addHook('onRequest', (request, _reply, done) => {
    const headers = request.headers
    for (const name in headers) {
      const value = headers[name]
      if (typeof value === 'string') {
        if (!isStorableText(value)) headers[name] = toStorableText(value)
      } else if (Array.isArray(value) && !value.every(isStorableText)) {
        headers[name] = value.map(toStorableText)
      }
    }
    done()
  })
  app.addHook('preValidation', (request, _reply, done) => {
    // Most requests have no path parameter, no query string and no body: nothing to walk.
    if (isEmpty(request.params) && isEmpty(request.query) && isEmpty(request.body)) return done()
    const errors = [
      ...unstorableFields('params', request.params),
      ...unstorableFields('querystring', request.query),
      ...unstorableFields('body', request.body),
    ].slice(0, MAX_FIELD_ERRORS)
    if (errors.length > 0) {
      done(new PlinthError('PLINTH_HTTP_INVALID_TEXT', undefined, { errors }))
      return
    }
    done()
  })
}

export default fp(textGuard, { name: 'plinth-text-guard', fastify: '5.x' })
