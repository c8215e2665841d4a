import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import FindMyWay, { type HTTPMethod } from 'find-my-way'
import { type ErrorCode, PlinthError, translateDbError } from '../../shared/errors.ts'
import { type AjvIssue, fieldErrors, MAX_FIELD_ERRORS } from '../../shared/validation.ts'

export const PROBLEM_CONTENT_TYPE = 'application/problem+json; charset=utf-8'
const METHODS: readonly HTTPMethod[] = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']

/** Seconds a 503 asks the client to wait when the refusing part did not say. */
const RETRY_AFTER_503 = 5

/** Fastify's own error codes and the registry codes they become. */
const fastifyCodes: Readonly<Record<string, ErrorCode>> = {
  FST_ERR_CTP_BODY_TOO_LARGE: 'PLINTH_HTTP_BODY_TOO_LARGE',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'PLINTH_HTTP_UNSUPPORTED_MEDIA_TYPE',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'PLINTH_HTTP_MALFORMED_BODY',
  FST_ERR_CTP_INVALID_JSON_BODY: 'PLINTH_HTTP_MALFORMED_BODY',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'PLINTH_HTTP_BAD_REQUEST',
  FST_UNDER_PRESSURE: 'PLINTH_HTTP_OVERLOADED',
}

// fieldErrors lives with the validators (src/shared), where job payload validation uses it too.
export { fieldErrors, MAX_FIELD_ERRORS }

/** Any error thrown while handling a request, as a registered PlinthError. */
export function toPlinthError(err: FastifyError | Error): PlinthError {
  if (err instanceof PlinthError) return err
  const fe = err as FastifyError & { validation?: AjvIssue[]; validationContext?: string }
  if (fe.validation) {
    const context = fe.validationContext ?? 'body'
    return new PlinthError(
      context === 'body' ? 'PLINTH_HTTP_VALIDATION_FAILED' : 'PLINTH_HTTP_INVALID_REQUEST',
      undefined,
      {
        errors: fieldErrors(context, fe.validation),
      },
    )
  }
  const mapped = fe.code ? fastifyCodes[fe.code] : undefined
  if (mapped === 'PLINTH_HTTP_OVERLOADED')
    return new PlinthError(mapped, undefined, { headers: { 'retry-after': '10' } })
  if (mapped) return new PlinthError(mapped, undefined, { cause: err })
  if (err instanceof SyntaxError && fe.statusCode === 400)
    return new PlinthError('PLINTH_HTTP_MALFORMED_BODY', undefined, { cause: err })
  const db = translateDbError(err)
  if (db)
    return db.code === 'PLINTH_DB_CONFLICT'
      ? db
      : // translateDbError answers built-in codes only
        new PlinthError(db.code as ErrorCode, undefined, { cause: err, headers: { 'retry-after': '5' } })
  const status = fe.statusCode ?? 500
  if (status === 408) return new PlinthError('PLINTH_HTTP_REQUEST_TIMEOUT', undefined, { cause: err })
  if (status === 503 && fe.code === 'FST_ERR_SERVER_CLOSING')
    return new PlinthError('PLINTH_HTTP_SHUTTING_DOWN')
  // Fastify's other client errors (bad URL, bad header…) carry safe messages.
  if (status >= 400 && status < 500)
    return new PlinthError('PLINTH_HTTP_CLIENT_ERROR', err.message, { cause: err, status })
  return new PlinthError('PLINTH_INTERNAL', undefined, { cause: err })
}

/** The RFC 9457 body of `error`, for the request `requestId` to `url`. */
export function problemBody(error: PlinthError, requestId: string, url: string, debug?: Error) {
  return {
    type: `urn:plinth:error:${error.code}`,
    title: error.title,
    status: error.status,
    detail: error.message,
    code: error.code,
    requestId,
    instance: url.split('?', 1)[0],
    ...(error.errors ? { errors: error.errors } : {}),
    ...(debug ? { debug: { message: debug.message, stack: debug.stack } } : {}),
  }
}

export function sendProblem(
  request: FastifyRequest,
  reply: FastifyReply,
  error: PlinthError,
  debug?: Error,
): FastifyReply {
  if (error.headers) reply.headers(error.headers)
  // Every 503 tells the client when to come back, whichever part refused.
  if (error.status === 503 && !reply.hasHeader('retry-after'))
    reply.header('retry-after', String(RETRY_AFTER_503))
  // Serialized here: a route's response schema for the same status (the 503 of /ready) describes
  // its own body, not a problem, and would make the serializer fail into a bare 500.
  return reply
    .code(error.status)
    .type(PROBLEM_CONTENT_TYPE)
    .send(JSON.stringify(problemBody(error, request.id, request.url, debug)))
}

/**
 * Every error becomes `application/problem+json` (RFC 9457) with a registered `code` and the
 * `requestId`. Unknown paths answer 404; known paths with another method answer 405 with `Allow`.
 * 5xx bodies carry no internals outside development.
 */
async function problemJson(app: FastifyInstance, opts: { development: boolean }): Promise<void> {
  // A method-agnostic copy of the route table, to tell 405 from 404.
  const paths = FindMyWay()
  app.addHook('onRoute', (route) => {
    if (route.url.includes('*')) return
    for (const method of [route.method].flat()) {
      try {
        paths.on(method as HTTPMethod, route.url, () => {})
      } catch {
        // Already known (e.g. the HEAD twin of a GET route).
      }
    }
  })

  app.setNotFoundHandler((request, reply) => {
    const path = request.url.split('?', 1)[0] ?? '/'
    const allowed = METHODS.filter((m) => paths.find(m, path) !== null)
    if (allowed.length > 0) {
      return sendProblem(
        request,
        reply,
        new PlinthError('PLINTH_HTTP_METHOD_NOT_ALLOWED', undefined, {
          headers: { allow: allowed.join(', ') },
        }),
      )
    }
    return sendProblem(request, reply, new PlinthError('PLINTH_HTTP_NOT_FOUND'))
  })

  app.setErrorHandler((err, request, reply) => {
    const error = toPlinthError(err instanceof Error ? err : new Error(String(err)))
    if (error.status >= 500) {
      request.log.error({ err: error.cause ?? err, code: error.code }, 'request failed')
    } else {
      request.log.debug({ code: error.code, reason: error.message }, 'request rejected')
    }
    const showDebug = opts.development && error.status >= 500 && err instanceof Error
    return sendProblem(request, reply, error, showDebug ? err : undefined)
  })
}

export default fp(problemJson, { name: 'plinth-problem-json', fastify: '5.x' })
