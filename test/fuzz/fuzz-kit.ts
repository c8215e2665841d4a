/**
 * The schema-driven fuzz suite (issue 9, "Keep it found"): every operation of the app's own
 * OpenAPI document gets generated requests, authenticated as an administrator (session cookie +
 * CSRF, or bearer) or not at all, on one backend. A 5xx (other than a designed 503), a hang past
 * the per-request deadline, an uncaught exception or an unshaped error fails the test and prints
 * the request, the response and the seed.
 *
 * Seeds: every operation runs PLINTH_FUZZ_RUNS (default 200) requests from the fixed seed, then
 * PLINTH_FUZZ_RANDOM_RUNS (default 100) from a random seed, printed: 300 per operation and backend. PLINTH_FUZZ_SEED=<n> replaces
 * the random seed, to reproduce a failure; PLINTH_FUZZ_OPS=<regex> narrows the operations
 * ("POST /api/v1/jobs/{name}").
 */
import assert from 'node:assert/strict'
import { randomInt } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { Writable } from 'node:stream'
import { after, before, describe, it } from 'node:test'
import fc from 'fast-check'
import type { InjectOptions, LightMyRequestResponse } from 'fastify'
import { accountsServices } from '../../src/modules/accounts/accounts.wiring.ts'
import { createLogger } from '../../src/observability/logger.ts'
import {
  bearer,
  cookieFor,
  createUser,
  NO_RATE_LIMITS,
  type Session,
  uniqueEmail,
  viaCookie,
} from '../helpers/accounts.ts'
import { injectUnrecorded } from '../helpers/run-logs.ts'
import { skipUnlessPostgres } from '../helpers/services.ts'
import { testConfig } from '../helpers/test-config.ts'
import { type Backend, startTestPlinth, type TestPlinth } from '../helpers/test-plinth.ts'
import {
  asText,
  encodeAny,
  hostileRawBodies,
  hostileValue,
  type KnownValues,
  type Schema,
  schemaArbitrary,
  sometimes,
} from './arbitraries.ts'

export const FIXED_SEED = 20_260_906
const RUNS = Number(process.env.PLINTH_FUZZ_RUNS ?? 200)
const RANDOM_RUNS = Number(process.env.PLINTH_FUZZ_RANDOM_RUNS ?? 100)
const RANDOM_SEED = process.env.PLINTH_FUZZ_SEED ? Number(process.env.PLINTH_FUZZ_SEED) : randomInt(2 ** 31)
const ONLY = process.env.PLINTH_FUZZ_OPS ? new RegExp(process.env.PLINTH_FUZZ_OPS) : undefined
/** A request slower than this is a hang (the machine is loaded: generous). */
const DEADLINE_MS = Number(process.env.PLINTH_FUZZ_DEADLINE_MS ?? 20_000)
/** 503s that are designed answers, not faults. */
const DESIGNED_503 = new Set(['PLINTH_JOB_QUEUE_FULL', 'PLINTH_HTTP_OVERLOADED'])
const METHODS = ['get', 'put', 'post', 'patch', 'delete'] as const
/** PLINTH_FUZZ_STATS=1 prints the statuses each operation answered (to see how deep requests get). */
const STATS = process.env.PLINTH_FUZZ_STATS === '1'

type AuthKind = 'bearer' | 'cookie' | 'none' | 'bogus-bearer' | 'cookie-without-csrf'

/** One generated request, before the credentials of the moment are added. */
interface FuzzRequest {
  readonly method: string
  readonly url: string
  readonly auth: AuthKind
  readonly headers: Record<string, string>
  /** Sent as is (raw) when a string, else serialized as JSON. */
  readonly body?: { readonly raw: string } | { readonly json: unknown }
}

interface Operation {
  readonly method: string
  readonly path: string
  readonly key: string
  // biome-ignore lint/suspicious/noExplicitAny: an OpenAPI operation object
  readonly op: any
}

/** Every operation of the document, in document order. */
export function operationsOf(doc: Schema): Operation[] {
  const ops: Operation[] = []
  for (const [path, item] of Object.entries<Schema>(doc.paths)) {
    for (const method of METHODS) {
      if (item[method])
        ops.push({
          method: method.toUpperCase(),
          path,
          key: `${method.toUpperCase()} ${path}`,
          op: item[method],
        })
    }
  }
  return ops
}

const CONTENT_TYPES = [
  'text/plain',
  'application/x-www-form-urlencoded',
  'multipart/form-data; boundary=x',
  'application/json; charset=utf-16',
  'application/jsonx',
  'application/json, text/plain',
  'application/problem+json',
  '',
]

const PROTO_QUERIES = [
  '__proto__[isAdmin]=1',
  'constructor[prototype][isAdmin]=1',
  '__proto__=x',
  'toString=1',
]

/** The arbitrary of requests to one operation. */
/** True when `url`, once parsed (dot-segments resolved), still has the segments of the `template` path. */
function sameRoute(template: string, url: string): boolean {
  const path = new URL(url, 'http://fuzz.test').pathname
  return path.split('/').length === template.split('/').length
}

export function requestArbitrary(
  operation: Operation,
  known: KnownValues,
  components: Schema,
): fc.Arbitrary<FuzzRequest> {
  const params: Schema[] = operation.op.parameters ?? []
  const pathParams = params.filter((p) => p.in === 'path')
  const queryParams = params.filter((p) => p.in === 'query')
  const bodySchema = operation.op.requestBody?.content?.['application/json']?.schema

  const pathValue = (p: Schema) =>
    fc.oneof(
      { arbitrary: schemaArbitrary(p.schema ?? { type: 'string' }, known, components, 0), weight: 6 },
      { arbitrary: hostileValue, weight: 3 },
      {
        arbitrary: fc.constantFrom(
          '%00',
          '%zz',
          '%ED%A0%80',
          `${'a'.repeat(150)}`,
          '..%2F..%2F',
          '%2e%2e',
          '%C0%AF',
        ),
        weight: 1,
      },
    )
  const pathArb = fc.tuple(...pathParams.map(pathValue)).map((values) => {
    let url = operation.path
    pathParams.forEach((p, i) => {
      const v = values[i]
      // Pre-encoded escapes go as they are; everything else is encoded (lone surrogates as WTF-8).
      const text =
        typeof v === 'string' && /^(%[0-9A-Za-z]{2}|\.\.%2F|a{150})/.test(v) ? v : encodeAny(asText(v))
      url = url.replace(`{${p.name}}`, text)
    })
    return url
  })

  // Either several values mixed with hostile ones, or every value valid-ish but one hostile (so that
  // it reaches the handler instead of failing validation beside another bad value).
  const mixedQuery = fc.tuple(
    ...queryParams.map((p) =>
      sometimes(
        schemaArbitrary(p.schema ?? { type: 'string' }, known, components, 0.15),
        p.required ? 0.95 : 0.4,
      ),
    ),
  )
  const oneBadQuery = fc
    .tuple(
      fc.tuple(
        ...queryParams.map((p) =>
          sometimes(
            schemaArbitrary(p.schema ?? { type: 'string' }, known, components, 0),
            p.required ? 1 : 0.3,
          ),
        ),
      ),
      fc.nat(),
      hostileValue,
    )
    .map(([values, at, bad]) => {
      const copy: unknown[] = [...values]
      if (copy.length > 0) copy[at % copy.length] = bad
      return copy
    })
  const queryArb = fc
    .tuple(
      fc.oneof(mixedQuery as fc.Arbitrary<unknown[]>, oneBadQuery),
      sometimes(fc.constantFrom(...PROTO_QUERIES), 0.1),
      sometimes(fc.constant(true), 0.1),
    )
    .map(([values, extra, duplicate]) => [...values, extra, duplicate] as unknown[])
    .map((parts) => {
      const values = parts.slice(0, queryParams.length)
      const extra = parts[queryParams.length] as string | null
      const duplicate = parts[queryParams.length + 1] === true
      const pairs: string[] = []
      queryParams.forEach((p, i) => {
        const v = values[i]
        if (v === null || v === undefined) return
        const items = Array.isArray(v) && p.schema?.type === 'array' ? v : [v]
        for (const item of items) pairs.push(`${encodeURIComponent(p.name)}=${encodeAny(asText(item))}`)
        if (duplicate) pairs.push(`${encodeURIComponent(p.name)}=${encodeAny(asText(v))}`)
      })
      if (extra) pairs.push(extra)
      return pairs.length > 0 ? `?${pairs.join('&')}` : ''
    })

  const bodyArb: fc.Arbitrary<FuzzRequest['body'] | undefined> = bodySchema
    ? fc.oneof(
        {
          arbitrary: schemaArbitrary(bodySchema, known, components, 0.15).map((json) => ({ json })),
          weight: 60,
        },
        {
          arbitrary: schemaArbitrary(bodySchema, known, components, 0).map((json) => ({ json })),
          weight: 15,
        },
        {
          arbitrary: fc
            .tuple(schemaArbitrary(bodySchema, known, components, 0), fc.nat(), hostileValue)
            .map(([json, at, bad]) => ({ json: replaceOneLeaf(json, at, bad) })),
          weight: 30,
        },
        { arbitrary: hostileValue.map((json) => ({ json })), weight: 10 },
        { arbitrary: fc.constantFrom(...hostileRawBodies).map((raw) => ({ raw })), weight: 10 },
        { arbitrary: fc.constant(undefined), weight: 5 },
      )
    : fc.oneof(
        { arbitrary: fc.constant(undefined), weight: 85 },
        { arbitrary: hostileValue.map((json) => ({ json })), weight: 10 },
        { arbitrary: fc.constantFrom(...hostileRawBodies).map((raw) => ({ raw })), weight: 5 },
      )

  const headerArb = fc.record(
    {
      contentType: sometimes(fc.constantFrom(...CONTENT_TYPES), 0.1),
      userAgent: sometimes(
        fc.oneof(fc.constantFrom('ua\u0000x', 'ua\uD800', 'z'.repeat(2000)), fc.string()),
        0.2,
      ),
      requestId: sometimes(fc.constantFrom('../x', 'a'.repeat(200), 'id\u0000', 'ok-id-1'), 0.1),
      idempotencyKey: sometimes(
        fc.oneof(fc.constantFrom('k\u0000', 'x'.repeat(5000), ''), fc.string({ unit: 'binary' })),
        0.15,
      ),
      accept: sometimes(fc.constantFrom('text/html', '*/*', 'application/xml'), 0.1),
    },
    { requiredKeys: [] },
  )

  const authArb = fc.constantFrom<AuthKind>(
    'bearer',
    'bearer',
    'bearer',
    'cookie',
    'cookie',
    'none',
    'bogus-bearer',
    'cookie-without-csrf',
  )

  return fc
    .record({ path: pathArb, query: queryArb, body: bodyArb, headers: headerArb, auth: authArb })
    .map((r) => {
      const headers: Record<string, string> = {}
      const h = r.headers
      if (h.userAgent !== undefined && h.userAgent !== null) headers['user-agent'] = h.userAgent
      if (h.requestId) headers['x-request-id'] = h.requestId
      if (h.idempotencyKey !== undefined && h.idempotencyKey !== null)
        headers['idempotency-key'] = h.idempotencyKey
      if (h.accept) headers.accept = h.accept
      if (r.body !== undefined) headers['content-type'] = 'application/json'
      if (h.contentType !== undefined && h.contentType !== null) headers['content-type'] = h.contentType
      return {
        method: operation.method,
        url: `${r.path}${r.query}`,
        auth: r.auth,
        headers,
        ...(r.body !== undefined ? { body: r.body } : {}),
      }
    })
}

/** `value` with its `at`-th leaf (modulo the number of leaves) replaced by `bad`; a copy. */
function replaceOneLeaf(value: unknown, at: number, bad: unknown): unknown {
  const leaves: (string | number)[][] = []
  const walk = (v: unknown, path: (string | number)[]) => {
    if (v !== null && typeof v === 'object') {
      for (const [k, child] of Object.entries(v)) walk(child, [...path, Array.isArray(v) ? Number(k) : k])
    } else leaves.push(path)
  }
  walk(value, [])
  const path = leaves[at % Math.max(1, leaves.length)]
  if (!path || path.length === 0) return value
  const copy = structuredClone(value) as Record<string | number, unknown>
  let node = copy
  for (const key of path.slice(0, -1)) node = node[key] as Record<string | number, unknown>
  node[path.at(-1)!] = bad
  return copy
}

function show(value: string, max = 600): string {
  const escaped = JSON.stringify(value)
  return escaped.length > max ? `${escaped.slice(0, max)}… (${value.length} chars)` : escaped
}

/** The request as a failure report shows it: the administrator's credentials are not printed. */
function describeRequest(req: InjectOptions): string {
  const body =
    typeof req.payload === 'string' ? req.payload : req.payload === undefined ? '' : String(req.payload)
  return [
    `  ${req.method} ${show(String(req.url), 400)}`,
    `  headers: ${show(JSON.stringify(printable(req.headers ?? {})), 800)}`,
    body ? `  body: ${show(body)}` : '  body: (none)',
  ].join('\n')
}

function printable(headers: object): Record<string, unknown> {
  const out: Record<string, unknown> = { ...headers }
  if (typeof out.authorization === 'string')
    out.authorization = out.authorization.replace(/pls_\S+/, 'pls_<admin session>')
  if (typeof out.cookie === 'string') out.cookie = out.cookie.replace(/pls_\S+/, 'pls_<admin session>')
  if (typeof out['x-csrf-token'] === 'string') out['x-csrf-token'] = '<its CSRF token>'
  return out
}

/** Codes any request can get before routing; the document's description lists them, not each operation. */
const BEFORE_ROUTING = new Set([
  'PLINTH_HTTP_NOT_FOUND',
  'PLINTH_HTTP_METHOD_NOT_ALLOWED',
  'PLINTH_HTTP_BAD_URL',
  'PLINTH_HTTP_HEADERS_TOO_LARGE',
  'PLINTH_HTTP_REQUEST_TIMEOUT',
])

/** The answer's status (and for an error its code) is not among the operation's documented responses. */
function undocumented(operation: Operation, res: LightMyRequestResponse): string | undefined {
  const response = operation.op.responses?.[String(res.statusCode)]
  if (res.statusCode < 400) return response ? undefined : `undocumented status ${res.statusCode}`
  const code = (res.json() as { code?: string }).code ?? ''
  if (BEFORE_ROUTING.has(code)) return undefined
  const codes: string[] =
    response?.content?.['application/problem+json']?.schema?.allOf?.[1]?.properties?.code?.enum ?? []
  return codes.includes(code) ? undefined : `undocumented error ${res.statusCode} ${code}`
}

/** What is wrong with a response, if anything. */
function verdict(res: LightMyRequestResponse): string | undefined {
  if (res.statusCode >= 500) {
    let code: string | undefined
    try {
      code = res.json().code
    } catch {
      code = undefined
    }
    if (!(res.statusCode === 503 && code && DESIGNED_503.has(code)))
      return `status ${res.statusCode} (${code})`
  }
  if (!res.headers['x-request-id']) return 'no X-Request-Id'
  if (res.headers['x-content-type-options'] !== 'nosniff') return 'no security headers'
  if (res.statusCode >= 400 && !String(res.headers['content-type']).startsWith('application/problem+json'))
    return `error without problem+json (${res.headers['content-type']})`
  return undefined
}

function withDeadline<T>(promise: Promise<T>, ms: number): Promise<T | 'hang'> {
  let timer: NodeJS.Timeout | undefined
  return Promise.race([
    promise,
    new Promise<'hang'>((resolve) => {
      timer = setTimeout(() => resolve('hang'), ms)
    }),
  ]).finally(() => clearTimeout(timer))
}

/** A stable 32-bit seed per operation, so one operation can be replayed alone. */
function seedFor(base: number, key: string): number {
  let h = base | 0
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193)
  return h >>> 0
}

/** Registers the fuzz suite for one backend (one `it` per operation). */
export async function fuzzBackend(backend: Backend): Promise<void> {
  const pgSkip = backend === 'postgres' ? await skipUnlessPostgres() : false

  describe(`fuzz: every operation on ${backend} (fixed seed ${FIXED_SEED}, random seed ${RANDOM_SEED})`, {
    skip: pgSkip,
  }, () => {
    let plinth: TestPlinth
    let admin: Session
    let doc: Schema
    let known: KnownValues
    const errors: string[] = []
    const crashes: string[] = []
    const onCrash = (err: unknown) => crashes.push(String((err as Error)?.stack ?? err))
    let requests = 0
    const startedAt = Date.now()

    const filesDir = mkdtempSync(join(tmpdir(), 'plinth-fuzz-files-'))
    before(async () => {
      process.on('uncaughtException', onCrash)
      process.on('unhandledRejection', onCrash)
      // Bodies are logged (redaction runs on every hostile body) into a sink; error lines are kept
      // to print with a failure.
      const sink = new Writable({
        write(chunk, _encoding, done) {
          const line = String(chunk)
          if (line.includes('"level":"error"') || line.includes('"level":"fatal"')) {
            errors.push(line.slice(0, 3000))
            if (errors.length > 50) errors.shift()
          }
          done()
        },
      })
      const config = testConfig({
        ...NO_RATE_LIMITS,
        PLINTH_LOG_BODIES: 'true',
        ...(backend === 'postgres' ? {} : {}),
      })
      plinth = await startTestPlinth({
        backend,
        env: {
          ...NO_RATE_LIMITS,
          PLINTH_LOG_BODIES: 'true',
          PLINTH_API_DOCS: 'true',
          // Load shedding (tested in pressure.test.ts) would turn whole operations into 503s
          // on this shared machine; the fuzz is about what each request does.
          PLINTH_MAX_EVENT_LOOP_DELAY: '0',
          PLINTH_MAX_HEAP_USED_RATIO: '0',
          // Webhooks to 127.0.0.1 are accepted, so that subscriptions, events and deliveries exist.
          PLINTH_WEBHOOKS_ALLOW_HTTP: 'true',
          PLINTH_WEBHOOKS_ALLOW_PRIVATE: 'true',
          // Uploads reach the storage (without one they answer 503 by design).
          PLINTH_FILES_DIR: filesDir,
          // The event stream ends by itself at once (the client would reconnect), so that an
          // accepted stream request gets its whole answer through inject instead of hanging.
          PLINTH_EVENTS_STREAM_MAX_AGE: '10ms',
        },
        logger: createLogger({ ...config, logLevel: 'debug', logFormat: 'json' }, sink),
      })
      admin = await createUser(plinth, uniqueEmail('fuzz-admin'), 'admin')
      const member = await createUser(plinth, uniqueEmail('fuzz-member'), 'member')
      doc = plinth.app.swagger()
      // Resources that exist, so that generated ids and names reach past "not found".
      const api = async (method: 'GET' | 'POST', url: string, payload?: object) => {
        const res = await plinth.app.inject({
          method,
          url: `/api/v1${url}`,
          headers: bearer(admin.token),
          ...(payload ? { payload } : {}),
        })
        assert.ok(res.statusCode < 300, `${method} ${url}: ${res.statusCode} ${res.body}`)
        return res.json()
      }
      const jobNames: string[] = (await api('GET', '/job-types')).jobTypes.map(
        (t: { name: string }) => t.name,
      )
      const schedule = await api('POST', '/schedules', {
        jobName: 'plinth.retention',
        cron: '0 3 * * *',
      }).catch(() => undefined)
      const webhook = await api('POST', '/webhooks', {
        url: 'http://127.0.0.1:9/hook',
        eventTypes: ['fuzz.*'],
      })
      const job = await api('POST', `/jobs/${jobNames[0]}`, { payload: {}, delay: 3_600_000 }).catch(
        () => undefined,
      )
      known = {
        ids: [member.userId, admin.userId, webhook.id, schedule?.id, job?.id].filter(
          (v): v is string => typeof v === 'string',
        ),
        jobNames,
      }
    })
    after(async () => {
      process.off('uncaughtException', onCrash)
      process.off('unhandledRejection', onCrash)
      await plinth?.close()
      rmSync(filesDir, { recursive: true, force: true })
      const seconds = (Date.now() - startedAt) / 1000
      process.stderr.write(
        `fuzz ${backend}: ${requests} requests in ${seconds.toFixed(1)} s (fixed seed ${FIXED_SEED}, random seed ${RANDOM_SEED}; PLINTH_FUZZ_SEED=${RANDOM_SEED} replays the random part)\n`,
      )
    })

    /** The admin's credentials, renewed (a new administrator) when a request ended the session. */
    const credentials = (auth: AuthKind): Record<string, string> => {
      switch (auth) {
        case 'bearer':
          return bearer(admin.token)
        case 'cookie':
          return viaCookie(admin)
        case 'cookie-without-csrf':
          return { cookie: admin.cookie }
        case 'bogus-bearer':
          return { authorization: 'Bearer pls_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' }
        default:
          return {}
      }
    }
    /**
     * A new session for the administrator, made directly (no password hashing: the fuzz ends
     * hundreds of sessions through logout), or a new administrator when that one lost its role,
     * was disabled or erased.
     */
    const renewAdmin = async () => {
      const { token } = await accountsServices(plinth.context).sessions.create(admin.userId, {})
      const me = await plinth.app.inject({ url: '/api/v1/me', headers: bearer(token) })
      if (me.statusCode === 200 && me.json().user?.role === 'admin') {
        admin = { ...admin, token, csrfToken: me.json().csrfToken, cookie: cookieFor(token) }
        return
      }
      admin = await createUser(plinth, uniqueEmail('fuzz-admin'), 'admin')
    }
    const restore = async (operation: Operation, res: LightMyRequestResponse, auth: AuthKind) => {
      if (operation.key === 'PUT /api/v1/admin/mfa-policy' && res.statusCode === 200)
        await plinth.db.kysely.updateTable('role_policies').set({ mfa_required: false }).execute()
      if ((auth === 'bearer' || auth === 'cookie') && (res.statusCode === 401 || res.statusCode === 403)) {
        const me = await plinth.app.inject({ url: '/api/v1/me', headers: bearer(admin.token) })
        if (me.statusCode !== 200 || me.json().user?.role !== 'admin') await renewAdmin()
      }
    }

    // The operations are only known once the app runs: one test walks them all, with a subtest each.
    // Its own deadline is the sum of theirs (the run's default per-test timeout would cut a whole
    // walk short on a loaded machine); each request still has DEADLINE_MS.
    it('answers every generated request without a 5xx, a hang or a crash', {
      timeout: 15 * 60_000,
    }, async (t) => {
      const operations = operationsOf(doc).filter((o) => !ONLY || ONLY.test(o.key))
      assert.ok(operations.length > 0, 'no operation to fuzz')
      if (!ONLY) assert.ok(operations.length >= 50, `only ${operations.length} operations in the document`)
      for (const operation of operations) {
        await t.test(operation.key, async () => {
          // Each operation starts from a fresh administrator: what earlier operations did to the
          // last one (sessions, MFA enrolment, a long audit trail that slows its data export) stays behind.
          admin = await createUser(plinth, uniqueEmail('fuzz-admin'), 'admin')
          const failures: string[] = []
          const statuses = new Map<string, number>()
          const loop = monitorEventLoopDelay({ resolution: 20 })
          loop.enable()
          const opStart = Date.now()
          for (const [label, base, runs] of [
            ['fixed', FIXED_SEED, RUNS],
            ['random', RANDOM_SEED, RANDOM_RUNS],
          ] as const) {
            if (runs <= 0) continue
            const seed = seedFor(base, operation.key)
            const samples = fc.sample(requestArbitrary(operation, known, doc.components), {
              seed,
              numRuns: runs,
            })
            for (let i = 0; i < samples.length; i++) {
              const sample = samples[i]!
              const req: InjectOptions = {
                method: sample.method as InjectOptions['method'],
                url: sample.url,
                headers: { ...sample.headers, ...credentials(sample.auth) },
                ...(sample.body === undefined
                  ? {}
                  : { payload: 'raw' in sample.body ? sample.body.raw : JSON.stringify(sample.body.json) }),
              }
              requests++
              const errorsBefore = errors.length
              let outcome: LightMyRequestResponse | 'hang'
              try {
                outcome = await withDeadline(injectUnrecorded(plinth.app, req), DEADLINE_MS)
              } catch (err) {
                failures.push(`inject threw ${String(err)}`)
                continue
              }
              const problem =
                outcome === 'hang'
                  ? `no answer within ${DEADLINE_MS} ms`
                  : (verdict(outcome) ??
                    // A path value that is a dot-segment ('.', '%2e', '..') is resolved away by URL
                    // parsing, as every HTTP client does: the request then addresses another route,
                    // whose answers this operation does not document. Only the verdict applies.
                    (sameRoute(operation.path, req.url as string)
                      ? undocumented(operation, outcome)
                      : undefined))
              if (problem && failures.length < 8) {
                const res = outcome === 'hang' ? undefined : outcome
                failures.push(
                  [
                    `${problem} — ${label} seed ${base} (operation seed ${seed}), request #${i}:`,
                    describeRequest(req),
                    res ? `  response: ${res.statusCode} ${show(res.body, 800)}` : '',
                    ...errors.slice(errorsBefore, errorsBefore + 2).map((l) => `  log: ${l.slice(0, 1500)}`),
                  ].join('\n'),
                )
              }
              if (outcome !== 'hang') {
                if (STATS) {
                  const key = `${outcome.statusCode}${outcome.statusCode >= 400 ? ` ${outcome.json().code}` : ''}`
                  statuses.set(key, (statuses.get(key) ?? 0) + 1)
                }
                await restore(operation, outcome, sample.auth)
              }
            }
          }
          if (STATS)
            process.stderr.write(
              `${operation.key} (${Date.now() - opStart} ms, max loop delay ${Math.round(loop.max / 1e6)} ms, heap ${Math.round(process.memoryUsage().heapUsed / 1e6)} MB): ${[
                ...statuses,
              ]
                .sort((a, b) => b[1] - a[1])
                .map(([k, n]) => `${k}×${n}`)
                .join(', ')}\n`,
            )
          assert.deepEqual(crashes, [], 'uncaught exceptions or unhandled rejections')
          assert.equal(failures.length, 0, `${operation.key}:\n${failures.join('\n\n')}`)
        })
      }
    })
  })
}
