import assert from 'node:assert/strict'
import { execFile, spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { Writable } from 'node:stream'
import { after, before, describe, it } from 'node:test'
import { promisify } from 'node:util'
import { SpanKind } from '@opentelemetry/api'
import { InMemorySpanExporter, type ReadableSpan } from '@opentelemetry/sdk-trace'
import { configSchema, type PlinthConfig } from '../src/config/config.schema.ts'
import { WEBHOOK_DELIVERY_JOB } from '../src/modules/webhooks/event-bus.ts'
import { createLogger } from '../src/observability/logger.ts'
import { bearer, createUser, NO_RATE_LIMITS, type Session, uniqueEmail, waitFor } from './helpers/accounts.ts'
import { startOtlpReceiver } from './helpers/otlp-receiver.ts'
import { useRedisKit } from './helpers/redis-kit.ts'
import { runLogStream, teeChildLogs } from './helpers/run-logs.ts'
import { TEST_REDIS_URL } from './helpers/services.ts'
import { childBaseEnv } from './helpers/spawn-cli.ts'
import { testConfig } from './helpers/test-config.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'
import { type Receiver, startReceiver } from './helpers/webhook-receiver.ts'

const run = promisify(execFile)
const hex = (bytes: number) => randomBytes(bytes).toString('hex')
const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-0[01]$/

/** A Plinth logger with trace ids on (the mixin), writing JSON lines into memory and the run's log capture. */
function traceLogs(config: PlinthConfig) {
  const lines: string[] = []
  const capture = runLogStream()
  const stream = new Writable({
    write(chunk, _enc, done) {
      lines.push(...String(chunk).split('\n').filter(Boolean))
      capture?.write(String(chunk))
      done()
    },
  })
  const logger = createLogger({ ...config, logFormat: 'json', logLevel: 'debug' }, stream, { traceIds: true })
  return { logger, lines: () => lines.map((l) => JSON.parse(l) as Record<string, unknown>) }
}

const parentOf = (s: ReadableSpan) => s.parentSpanContext?.spanId

describe('tracing: one trace from the request through the job to the webhook', () => {
  const config = testConfig({
    ...NO_RATE_LIMITS,
    PLINTH_WEBHOOKS_ALLOW_PRIVATE: 'true',
    PLINTH_JOBS_POLL_INTERVAL: '500ms',
  })
  const logs = traceLogs(config)
  const exporter = new InMemorySpanExporter()
  let plinth: TestPlinth
  let receiver: Receiver
  let operator: Session

  before(async () => {
    receiver = await startReceiver()
    plinth = await startTestPlinth({ config, logger: logs.logger, traceExporter: exporter })
    operator = await createUser(plinth, uniqueEmail('operator'), 'operator')
    const sub = await plinth.app.inject({
      method: 'POST',
      url: '/api/v1/webhooks',
      headers: bearer(operator.token),
      payload: { url: receiver.url('/hook'), eventTypes: ['order.*'] },
    })
    assert.equal(sub.statusCode, 201, sub.body)
  })
  after(async () => {
    await plinth?.close()
    await receiver?.close()
  })

  it('continues the caller’s traceparent into the enqueued job and the webhook it posts, and logs join the spans', async () => {
    const traceId = hex(16)
    const callerSpanId = hex(8)
    exporter.reset()
    const res = await plinth.app.inject({
      method: 'POST',
      url: '/api/v1/events',
      headers: { ...bearer(operator.token), traceparent: `00-${traceId}-${callerSpanId}-01` },
      payload: { type: 'order.paid', data: { order: 42 } },
    })
    assert.equal(res.statusCode, 202, res.body)
    const requestId = String(res.headers['x-request-id'])

    const delivered = await waitFor('the webhook delivery', () => receiver.of('/hook').at(0), {
      timeoutMs: 20_000,
    })
    const header = String(delivered.headers.traceparent)
    const match = TRACEPARENT.exec(header)
    assert.ok(match, `the receiver got traceparent ${header}`)
    assert.equal(match[1], traceId, 'the webhook carries the caller’s trace id')

    const spans = await waitFor('the job span to end', () => {
      const all = exporter.getFinishedSpans()
      return all.some((s) => s.name === `job ${WEBHOOK_DELIVERY_JOB}`) ? all : undefined
    })
    const server = spans.find((s) => s.kind === SpanKind.SERVER && s.name === 'POST /api/v1/events')
    assert.ok(server, `a SERVER span for the request; got ${spans.map((s) => s.name).join(', ')}`)
    assert.equal(server.spanContext().traceId, traceId)
    assert.equal(parentOf(server), callerSpanId, 'the request span is a child of the caller’s span')
    assert.equal(server.attributes['http.route'], '/api/v1/events')
    assert.equal(server.attributes['http.response.status_code'], 202)
    assert.equal(server.attributes['plinth.request_id'], requestId)

    const job = spans.find((s) => s.name === `job ${WEBHOOK_DELIVERY_JOB}`)
    assert.ok(job)
    assert.equal(job.kind, SpanKind.CONSUMER)
    assert.equal(job.spanContext().traceId, traceId, 'the job continues the request’s trace')
    assert.equal(parentOf(job), server.spanContext().spanId, 'the job span is a child of the request span')
    assert.equal(job.attributes['plinth.job.attempt'], 1)
    assert.equal(job.attributes['plinth.request_id'], requestId)

    const post = spans.find((s) => s.name.startsWith('webhook POST'))
    assert.ok(post)
    assert.equal(post.kind, SpanKind.CLIENT)
    assert.equal(parentOf(post), job.spanContext().spanId, 'the webhook span is a child of the job span')
    assert.equal(match[2], post.spanContext().spanId, 'the receiver can continue from the webhook span')
    assert.equal(post.attributes['http.response.status_code'], 200)

    // The database calls of the request are spans of the same trace (pg instrumentation).
    const queries = spans.filter((s) => s.name.startsWith('pg.query') && s.spanContext().traceId === traceId)
    assert.ok(queries.length > 0, 'the request’s queries are traced')

    // Logs and traces join: the request's line and the job's lines carry the ids of their spans.
    const lines = logs.lines()
    const completed = lines.find((l) => l.msg === 'request completed' && l.requestId === requestId)
    assert.equal(completed?.traceId, traceId)
    assert.equal(completed?.spanId, server.spanContext().spanId)
    const deliveredLine = lines.find((l) => l.msg === 'webhook delivered')
    assert.equal(deliveredLine?.traceId, traceId)
    assert.equal(deliveredLine?.spanId, job.spanContext().spanId)
    // Outside a trace a line carries no ids (the engine's start, before any request).
    assert.ok(lines.some((l) => l.msg !== undefined && l.traceId === undefined))
  })

  it('starts a new trace for a request without traceparent, and ignores a malformed one', async () => {
    exporter.reset()
    for (const traceparent of [undefined, 'not-a-traceparent', `00-${'0'.repeat(32)}-${hex(8)}-01`]) {
      const res = await plinth.app.inject({
        method: 'GET',
        url: '/api/v1',
        headers: traceparent ? { traceparent } : {},
      })
      assert.equal(res.statusCode, 200)
    }
    const servers = exporter.getFinishedSpans().filter((s) => s.kind === SpanKind.SERVER)
    assert.equal(servers.length, 3)
    for (const s of servers) {
      assert.equal(parentOf(s), undefined, 'a root span')
      assert.equal(s.name, 'GET /api/v1')
    }
    assert.equal(new Set(servers.map((s) => s.spanContext().traceId)).size, 3, 'one trace per request')
  })

  it('marks a 404 span with its status and the unmatched route', async () => {
    exporter.reset()
    const res = await plinth.app.inject({ method: 'GET', url: '/api/v1/no-such-thing' })
    assert.equal(res.statusCode, 404)
    const [span] = exporter.getFinishedSpans().filter((s) => s.kind === SpanKind.SERVER)
    assert.equal(span?.attributes['http.response.status_code'], 404)
    assert.equal(span?.attributes['http.route'], 'unmatched')
  })
})

describe('tracing: Redis commands are spans of the request', () => {
  const prefix = `plinth-tracing-${hex(4)}:`
  const redis = useRedisKit()
  const exporter = new InMemorySpanExporter()
  let plinth: TestPlinth
  before(async () => {
    plinth = await startTestPlinth({
      env: { REDIS_URL: TEST_REDIS_URL, PLINTH_REDIS_PREFIX: prefix },
      traceExporter: exporter,
    })
  })
  after(() => plinth?.close())

  it('traces the session cache and rate-limit commands of an authenticated request (ioredis instrumentation)', async () => {
    redis.dropKeysAfter(prefix)
    const user = await createUser(plinth, uniqueEmail('redis'), 'member')
    exporter.reset()
    const traceId = hex(16)
    const res = await plinth.app.inject({
      method: 'GET',
      url: '/api/v1/me',
      headers: { ...bearer(user.token), traceparent: `00-${traceId}-${hex(8)}-01` },
    })
    assert.equal(res.statusCode, 200, res.body)
    const spans = exporter.getFinishedSpans().filter((s) => s.spanContext().traceId === traceId)
    const commands = spans.filter((s) => s.instrumentationScope.name.includes('ioredis'))
    assert.ok(commands.length > 0, `Redis spans in the trace; got ${spans.map((s) => s.name).join(', ')}`)
    const ids = new Set(spans.map((s) => s.spanContext().spanId))
    assert.ok(
      commands.every((c) => ids.has(parentOf(c) ?? '')),
      'each command hangs off a span of the request',
    )
  })
})

describe('tracing: sampling follows OTEL_TRACES_SAMPLER', () => {
  const config = testConfig({ OTEL_TRACES_SAMPLER: 'parentbased_traceidratio', OTEL_TRACES_SAMPLER_ARG: '0' })
  const logs = traceLogs(config)
  const exporter = new InMemorySpanExporter()
  let plinth: TestPlinth
  before(async () => {
    plinth = await startTestPlinth({ config, logger: logs.logger, traceExporter: exporter })
  })
  after(() => plinth?.close())

  it('at ratio 0 records no new trace, follows a sampled caller, and still puts trace ids on log lines', async () => {
    exporter.reset()
    const unsampled = await plinth.app.inject({ method: 'GET', url: '/api/v1' })
    assert.equal(exporter.getFinishedSpans().length, 0, 'no span for a new trace at ratio 0')
    const id = String(unsampled.headers['x-request-id'])
    const line = logs.lines().find((l) => l.msg === 'request completed' && l.requestId === id)
    assert.match(String(line?.traceId), /^[0-9a-f]{32}$/, 'an unsampled request still has a trace id to log')

    const traceId = hex(16)
    await plinth.app.inject({
      method: 'GET',
      url: '/api/v1',
      headers: { traceparent: `00-${traceId}-${hex(8)}-01` },
    })
    await plinth.app.inject({
      method: 'GET',
      url: '/api/v1',
      headers: { traceparent: `00-${hex(16)}-${hex(8)}-00` },
    })
    const spans = exporter.getFinishedSpans().filter((s) => s.kind === SpanKind.SERVER)
    assert.deepEqual(
      spans.map((s) => s.spanContext().traceId),
      [traceId],
      'only the caller that sampled its trace is recorded',
    )
  })
})

describe('tracing: OTLP HTTP/protobuf export', () => {
  it('posts the spans to OTEL_EXPORTER_OTLP_ENDPOINT/v1/traces, with the configured headers and service name', async () => {
    const collector = await startOtlpReceiver()
    const config = testConfig({
      OTEL_EXPORTER_OTLP_ENDPOINT: `${collector.url}/`,
      OTEL_EXPORTER_OTLP_HEADERS: 'x-collector-token=wire%20test',
      OTEL_SERVICE_NAME: 'plinth-wire-test',
    })
    const plinth = await startTestPlinth({ config })
    try {
      assert.equal(plinth.tracing?.target, `${collector.url}/v1/traces`)
      const traceId = hex(16)
      const callerSpanId = hex(8)
      const res = await plinth.app.inject({
        method: 'GET',
        url: '/api/v1',
        headers: { traceparent: `00-${traceId}-${callerSpanId}-01` },
      })
      assert.equal(res.statusCode, 200)
      await plinth.tracing?.flush()
      const spans = await waitFor('the request span at the collector', () => {
        const all = collector.spans()
        return all.some((s) => s.traceId === traceId) ? all : undefined
      })
      const request = collector.requests.at(-1)
      assert.equal(request?.path, '/v1/traces')
      assert.equal(request?.headers['content-type'], 'application/x-protobuf')
      assert.equal(request?.headers['x-collector-token'], 'wire test')
      const span = spans.find((s) => s.traceId === traceId)
      assert.ok(span)
      assert.equal(span.name, 'GET /api/v1')
      assert.equal(span.parentSpanId, callerSpanId)
      assert.equal(span.kind, 2, 'SPAN_KIND_SERVER')
      assert.equal(span.scope, 'plinth')
      assert.equal(span.attributes['http.response.status_code'], 200)
      assert.equal(span.resource['service.name'], 'plinth-wire-test')
      assert.equal(span.resource['deployment.environment.name'], 'test')
    } finally {
      await plinth.close()
      await collector.close()
    }
  })
})

describe('tracing: `plinth start` exporting to a collector in another process', () => {
  it('traces a request and its database calls, joins its log line, and exports what is left at shutdown', async () => {
    const collector = await startOtlpReceiver()
    const env = {
      ...childBaseEnv(),
      PLINTH_ENV: 'test',
      PORT: '0',
      HOST: '127.0.0.1',
      PLINTH_DATA_DIR: 'memory://',
      PLINTH_LOG_FORMAT: 'json',
      PLINTH_LOG_LEVEL: 'info',
      OTEL_EXPORTER_OTLP_ENDPOINT: collector.url,
      OTEL_SERVICE_NAME: 'plinth-process-test',
    }
    const proc = spawn(process.execPath, ['src/main.ts', 'start'], { env })
    teeChildLogs(proc, env)
    let out = ''
    proc.stdout.on('data', (d) => {
      out += d
    })
    const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)))
    const lines = () =>
      out
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as Record<string, unknown>)
    try {
      const listening = await waitFor(
        'plinth listening',
        () => lines().find((l) => l.msg === 'plinth listening'),
        {
          timeoutMs: 90_000,
          intervalMs: 100,
        },
      )
      assert.ok(lines().some((l) => l.msg === 'tracing started' && l.target === `${collector.url}/v1/traces`))
      const traceId = hex(16)
      // /ready pings the database: the pg spans must be children of the request span.
      const res = await fetch(`${listening.address}/ready`, {
        headers: { traceparent: `00-${traceId}-${hex(8)}-01` },
      })
      assert.equal(res.status, 200)
      proc.kill('SIGTERM')
      assert.equal(await exited, 0)
      // The batch was exported at shutdown at the latest.
      const spans = collector.spans().filter((s) => s.traceId === traceId)
      const server = spans.find((s) => s.name === 'GET /ready')
      assert.ok(server, `a request span; got ${spans.map((s) => s.name).join(', ')}`)
      assert.equal(server.resource['service.name'], 'plinth-process-test')
      const queries = spans.filter((s) => s.name.startsWith('pg.') && s.scope.includes('pg'))
      assert.ok(queries.length > 0, 'the database ping is traced')
      const ids = new Set(spans.map((s) => s.spanId))
      assert.ok(
        queries.every((q) => ids.has(q.parentSpanId)),
        'every database span hangs off a span of the request',
      )
      const line = lines().find((l) => l.msg === 'request completed' && l.route === '/ready')
      assert.equal(line?.traceId, traceId, 'the log line names the trace')
      assert.equal(line?.spanId, server.spanId)
    } finally {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL')
      await collector.close()
    }
  })
})

describe('tracing configuration', () => {
  it('refuses a sampler ratio outside 0..1, an unknown sampler and a non-HTTP endpoint, naming each variable', () => {
    assert.throws(
      () =>
        testConfig({
          OTEL_TRACES_SAMPLER_ARG: '2',
          OTEL_TRACES_SAMPLER: 'sometimes',
          OTEL_EXPORTER_OTLP_ENDPOINT: 'grpc://collector:4317',
        }),
      (err: Error) =>
        ['OTEL_TRACES_SAMPLER_ARG', 'OTEL_TRACES_SAMPLER', 'OTEL_EXPORTER_OTLP_ENDPOINT'].every((v) =>
          err.message.includes(v),
        ),
    )
  })

  it('masks the export headers (they carry credentials) wherever the configuration is printed', () => {
    const config = testConfig({ OTEL_EXPORTER_OTLP_HEADERS: 'authorization=Bearer%20s3cr3t-collector-token' })
    assert.equal(config.otelHeaders, 'authorization=Bearer%20s3cr3t-collector-token')
    assert.equal(configSchema.otelHeaders.secret, true)
  })
})

describe('tracing off', () => {
  const probe = async (env: Record<string, string>) => {
    const { stdout } = await run(process.execPath, ['test/fixtures/tracing-probe.ts'], {
      env: { ...process.env, ...env },
      timeout: 60_000,
    })
    return JSON.parse(stdout.trim().split('\n').at(-1) ?? '{}') as {
      status: number
      tracing: boolean
      sdk: number
    }
  }

  it('loads no OpenTelemetry SDK module when no endpoint is set (and does when one is)', async () => {
    const off = await probe({})
    assert.deepEqual(off, { status: 200, tracing: false, sdk: 0 })
    // The probe can see the SDK: with an endpoint the same process loads it.
    const on = await probe({ PROBE_OTLP: 'http://127.0.0.1:9' })
    assert.equal(on.tracing, true)
    assert.ok(on.sdk > 0, 'the probe sees SDK modules when tracing is on')
  })
})
