import assert from 'node:assert/strict'
import type { InjectOptions, LightMyRequestResponse } from 'fastify'
import type { PlinthApp } from '../../src/core/module.ts'
import { assertProblem } from './assert-problem.ts'

/**
 * One row of an endpoint matrix (in the spirit of PocketBase's `ApiScenario`): a request and what
 * must come back. `expectCode` makes it a problem+json check (status, code, request id, fields).
 *
 * @example
 * await runScenarios(app, [
 *   { name: 'anonymous', method: 'GET', url: '/api/v1/me', expectStatus: 401, expectCode: 'PLINTH_AUTH_REQUIRED' },
 *   { name: 'member', method: 'GET', url: '/api/v1/me', headers: bearer(token), expectStatus: 200,
 *     expect: (res) => assert.equal(res.json().email, email) },
 * ])
 */
export interface ApiScenario {
  readonly name: string
  readonly method: InjectOptions['method']
  readonly url: string
  readonly headers?: Readonly<Record<string, string>>
  readonly body?: unknown
  /** Runs before the request (e.g. to create what it acts on). */
  readonly before?: () => Promise<void> | void
  readonly expectStatus: number
  /** The registry code of a problem+json answer. */
  readonly expectCode?: string
  /** Response headers that must have exactly these values (undefined: absent). */
  readonly expectHeaders?: Readonly<Record<string, string | undefined>>
  /** Further checks of the response. */
  readonly expect?: (res: LightMyRequestResponse) => Promise<void> | void
}

/**
 * Runs every scenario in order and fails once at the end, listing every row that did not answer
 * as expected (not only the first), so one run shows the whole matrix's gaps.
 */
export async function runScenarios(app: PlinthApp, scenarios: readonly ApiScenario[]): Promise<void> {
  const failures: string[] = []
  for (const s of scenarios) {
    let res: LightMyRequestResponse | undefined
    try {
      await s.before?.()
      res = await app.inject({
        method: s.method,
        url: s.url,
        ...(s.headers ? { headers: { ...s.headers } } : {}),
        ...(s.body === undefined ? {} : { payload: s.body as object }),
      })
      if (s.expectCode !== undefined) assertProblem(res, s.expectStatus, s.expectCode)
      else
        assert.equal(
          res.statusCode,
          s.expectStatus,
          `expected ${s.expectStatus}, got ${res.statusCode}: ${res.body}`,
        )
      for (const [name, value] of Object.entries(s.expectHeaders ?? {}))
        assert.equal(res.headers[name], value, `header ${name}`)
      await s.expect?.(res)
    } catch (err) {
      const got = res ? ` (got ${res.statusCode} ${res.body.slice(0, 160)})` : ''
      failures.push(`${s.name} (${s.method} ${s.url}): ${(err as Error).message.split('\n')[0]}${got}`)
    }
  }
  assert.deepEqual(failures, [], `${failures.length} of ${scenarios.length} scenarios failed`)
}
