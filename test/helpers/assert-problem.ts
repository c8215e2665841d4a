import assert from 'node:assert/strict'
import type { LightMyRequestResponse } from 'fastify'

/** Every field an RFC 9457 problem body from Plinth carries. */
export const PROBLEM_FIELDS = ['type', 'title', 'status', 'detail', 'code', 'requestId', 'instance'] as const

/**
 * Asserts an `application/problem+json` response with this status and code, whose `requestId`
 * is the `X-Request-Id` header; returns the parsed body for further checks.
 */
export function assertProblem(
  res: LightMyRequestResponse,
  status: number,
  code: string,
): Record<string, unknown> {
  assert.equal(res.statusCode, status, `expected ${status} ${code}, got ${res.statusCode}: ${res.body}`)
  assert.match(String(res.headers['content-type']), /^application\/problem\+json/)
  const body = res.json() as Record<string, unknown>
  for (const field of PROBLEM_FIELDS) assert.ok(field in body, `problem body lacks "${field}": ${res.body}`)
  assert.equal(body.status, status)
  assert.equal(body.code, code)
  assert.equal(body.type, `urn:plinth:error:${code}`)
  assert.equal(typeof body.title, 'string')
  assert.equal(typeof body.detail, 'string')
  assert.equal(typeof body.instance, 'string')
  assert.ok(res.headers['x-request-id'], 'x-request-id header missing')
  assert.equal(body.requestId, res.headers['x-request-id'])
  return body
}
