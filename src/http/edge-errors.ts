import { randomUUID } from 'node:crypto'
import { STATUS_CODES } from 'node:http'
import type { Socket } from 'node:net'
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify'
import type { Logger } from 'pino'
import { REQUEST_ID_HEADER } from '../observability/request-id.ts'
import { type ErrorCode, PlinthError } from '../shared/errors.ts'
import { PROBLEM_CONTENT_TYPE, problemBody } from './plugins/problem-json.ts'
import { apiSecurityHeaders } from './plugins/security-headers.ts'

/**
 * Answers that Fastify or Node write before any hook runs, shaped like every other Plinth error:
 * problem+json with a registered code, the security headers and an `X-Request-Id`.
 */

const FRAMEWORK_CODES: Readonly<Record<string, ErrorCode>> = {
  FST_ERR_BAD_URL: 'PLINTH_HTTP_BAD_URL',
  FST_ERR_MAX_PARAM_LENGTH: 'PLINTH_HTTP_URI_TOO_LONG',
}

/**
 * Fastify's `frameworkErrors`: a URL that does not decode (`/%zz`), a path parameter longer than
 * `maxParamLength`. No hook has run (routing failed), so the headers are set here.
 */
export function frameworkErrorHandler(hsts: boolean) {
  const headers = apiSecurityHeaders(hsts)
  return (err: FastifyError, request: FastifyRequest, reply: FastifyReply): void => {
    const code = FRAMEWORK_CODES[err.code] ?? 'PLINTH_INTERNAL'
    const error = new PlinthError(code)
    if (error.status >= 500) request.log.error({ err, code }, 'request failed')
    else request.log.info({ code, statusCode: error.status, method: request.method }, 'request refused')
    reply
      .headers(headers)
      .header(REQUEST_ID_HEADER, request.id)
      .code(error.status)
      .type(PROBLEM_CONTENT_TYPE)
      .send(JSON.stringify(problemBody(error, request.id, request.url)))
  }
}

function clientErrorOf(err: NodeJS.ErrnoException): PlinthError {
  if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') return new PlinthError('PLINTH_HTTP_REQUEST_TIMEOUT')
  if (err.code === 'HPE_HEADER_OVERFLOW') return new PlinthError('PLINTH_HTTP_HEADERS_TOO_LARGE')
  return new PlinthError('PLINTH_HTTP_BAD_REQUEST')
}

/**
 * Node's `clientError` (the HTTP parser refused the bytes: headers too large, a malformed request
 * line, a request that took too long to arrive): a raw HTTP/1.1 problem+json answer with the
 * security headers and a fresh request id, then the connection closes. Nothing is written to a
 * socket that was reset or already answered.
 */
export function clientErrorHandler(hsts: boolean, logger: Logger) {
  const security = Object.entries(apiSecurityHeaders(hsts))
    .map(([name, value]) => `${name}: ${value}\r\n`)
    .join('')
  return (err: NodeJS.ErrnoException, socket: Socket): void => {
    if (err.code === 'ECONNRESET' || socket.destroyed) return
    const error = clientErrorOf(err)
    const requestId = randomUUID()
    logger.debug({ requestId, code: error.code, reason: err.code }, 'client error')
    const rawSocket = socket as Socket & { _httpMessage?: { headersSent?: boolean } }
    if (!socket.writable || rawSocket._httpMessage?.headersSent) {
      socket.destroy(err)
      return
    }
    const body = JSON.stringify(problemBody(error, requestId, '/'))
    socket.write(
      `HTTP/1.1 ${error.status} ${STATUS_CODES[error.status] ?? 'Error'}\r\n` +
        'Connection: close\r\n' +
        `Content-Type: ${PROBLEM_CONTENT_TYPE}\r\n` +
        `Content-Length: ${Buffer.byteLength(body)}\r\n` +
        `${REQUEST_ID_HEADER}: ${requestId}\r\n` +
        security +
        `\r\n${body}`,
    )
    socket.destroy()
  }
}
