import assert from 'node:assert/strict'
import { Writable } from 'node:stream'
import { after, before, describe, it } from 'node:test'
import { context, diag, ROOT_CONTEXT, SamplingDecision, SpanKind, trace } from '@opentelemetry/api'
import { InMemorySpanExporter, type ReadableSpan } from '@opentelemetry/sdk-trace'
import pino from 'pino'
import {
  activeSpan,
  activeTraceId,
  contextFromTraceparent,
  currentTraceparent,
  injectTraceHeaders,
  linkTo,
  recordError,
  SpanStatusCode,
  startTracing,
  type Tracing,
  type TracingConfig,
  traceFields,
  tracingConfigured,
  withSpan,
} from './tracing.ts'
import { samplerOf, tracesUrlOf } from './tracing-sdk.ts'

const TRACE_ID = '4bf92f3577b34da6a3ce929d0e0e4736'
const SAMPLED_PARENT = `00-${TRACE_ID}-00f067aa0ba902b7-01`
const UNSAMPLED_PARENT = `00-${TRACE_ID}-00f067aa0ba902b7-00`

const baseConfig: TracingConfig = {
  otelEndpoint: undefined,
  otelTracesEndpoint: undefined,
  otelHeaders: undefined,
  otelServiceName: 'plinth-test',
  otelTracesSampler: 'parentbased_always_on',
  otelTracesSamplerArg: 1,
  otelSdkDisabled: false,
  env: 'test',
  revision: 'unknown',
}

/** A pino logger into memory, for what the SDK layer logs. */
function memoryLogger() {
  const lines: Record<string, unknown>[] = []
  const stream = new Writable({
    write(chunk, _enc, done) {
      for (const l of String(chunk).split('\n').filter(Boolean)) lines.push(JSON.parse(l))
      done()
    },
  })
  return { logger: pino({ level: 'debug' }, stream), lines }
}

describe('tracing configuration helpers', () => {
  it('is configured by an endpoint or a traces endpoint, unless the SDK is disabled', () => {
    assert.equal(tracingConfigured(baseConfig), false)
    assert.equal(tracingConfigured({ ...baseConfig, otelEndpoint: 'http://collector:4318' }), true)
    assert.equal(tracingConfigured({ ...baseConfig, otelTracesEndpoint: 'http://collector:4318/t' }), true)
    assert.equal(
      tracingConfigured({ ...baseConfig, otelEndpoint: 'http://collector:4318', otelSdkDisabled: true }),
      false,
    )
  })

  it('sends to the traces endpoint as given, or to <endpoint>/v1/traces without doubled slashes', () => {
    assert.equal(
      tracesUrlOf({ otelEndpoint: 'http://a:4318', otelTracesEndpoint: 'http://b:4318/custom' }),
      'http://b:4318/custom',
    )
    assert.equal(
      tracesUrlOf({ otelEndpoint: 'http://a:4318//', otelTracesEndpoint: undefined }),
      'http://a:4318/v1/traces',
    )
    assert.throws(
      () => tracesUrlOf({ otelEndpoint: undefined, otelTracesEndpoint: undefined }),
      /no OTLP endpoint configured/,
    )
  })

  it('starts nothing (and loads no SDK) while no endpoint is configured and no exporter is given', async () => {
    assert.equal(await startTracing(baseConfig, { logger: memoryLogger().logger }), undefined)
    // With no SDK every helper is inert.
    assert.equal(activeSpan(), undefined)
    assert.equal(activeTraceId(), undefined)
    assert.deepEqual(traceFields(), {})
    assert.equal(currentTraceparent(), undefined)
    assert.deepEqual(linkTo(undefined), [])
    assert.equal(contextFromTraceparent(undefined), ROOT_CONTEXT)
    const result = await withSpan('off', {}, async (span) => {
      assert.equal(span.isRecording(), false)
      recordError(span, new Error('ignored')) // a non-recording span takes no error
      return 7
    })
    assert.equal(result, 7)
  })
})

describe('samplerOf: the sampler OTEL_TRACES_SAMPLER names', () => {
  // The parent as a propagator would extract it (no SDK, so no global propagator, runs here).
  const parentContext = (traceparent: string | undefined) => {
    if (!traceparent) return ROOT_CONTEXT
    const [, traceId, spanId, flags] = traceparent.split('-')
    return trace.setSpanContext(ROOT_CONTEXT, {
      traceId: traceId!,
      spanId: spanId!,
      traceFlags: Number(flags),
      isRemote: true,
    })
  }
  const decide = (sampler: ReturnType<typeof samplerOf>, parent: string | undefined): SamplingDecision =>
    sampler.shouldSample(parentContext(parent), TRACE_ID, 'x', SpanKind.INTERNAL, {}, []).decision
  const { NOT_RECORD, RECORD_AND_SAMPLED } = SamplingDecision
  const sampler = (name: TracingConfig['otelTracesSampler'], arg = 1) =>
    samplerOf({ otelTracesSampler: name, otelTracesSamplerArg: arg })

  it('always_on and always_off ignore the parent', () => {
    assert.equal(decide(sampler('always_on'), UNSAMPLED_PARENT), RECORD_AND_SAMPLED)
    assert.equal(decide(sampler('always_off'), SAMPLED_PARENT), NOT_RECORD)
  })

  it('traceidratio samples by trace id at the ratio, whatever the parent', () => {
    assert.equal(decide(sampler('traceidratio', 0), SAMPLED_PARENT), NOT_RECORD)
    assert.equal(decide(sampler('traceidratio', 1), UNSAMPLED_PARENT), RECORD_AND_SAMPLED)
  })

  it('the parent-based samplers follow a parent, and apply their root sampler without one', () => {
    assert.equal(decide(sampler('parentbased_always_off'), SAMPLED_PARENT), RECORD_AND_SAMPLED)
    assert.equal(decide(sampler('parentbased_always_off'), undefined), NOT_RECORD)
    assert.equal(decide(sampler('parentbased_traceidratio', 0), SAMPLED_PARENT), RECORD_AND_SAMPLED)
    assert.equal(decide(sampler('parentbased_traceidratio', 0), undefined), NOT_RECORD)
    assert.equal(decide(sampler('parentbased_traceidratio', 1), undefined), RECORD_AND_SAMPLED)
    assert.equal(decide(sampler('parentbased_always_on'), UNSAMPLED_PARENT), NOT_RECORD)
    assert.equal(decide(sampler('parentbased_always_on'), undefined), RECORD_AND_SAMPLED)
  })
})

describe('tracing with the SDK started (an in-memory exporter)', () => {
  const exporter = new InMemorySpanExporter()
  const logs = memoryLogger()
  let tracing: Tracing | undefined
  const ended = (name: string): ReadableSpan => {
    const span = exporter.getFinishedSpans().find((s) => s.name === name)
    assert.ok(span, `span ${name} was exported`)
    return span
  }

  before(async () => {
    tracing = await startTracing(
      { ...baseConfig, otelServiceName: 'plinth-unit', revision: 'abc1234' },
      { logger: logs.logger, exporter, version: '9.9.9' },
    )
  })
  after(() => tracing?.shutdown())

  it('names the exporter `custom`, logs that it started, and describes the service on every span', async () => {
    assert.equal(tracing?.target, 'custom')
    const started = logs.lines.find((l) => l.msg === 'tracing started')
    assert.equal(started?.target, 'custom')
    assert.equal(started?.component, 'tracing')
    await withSpan('described', {}, async () => {})
    const { attributes } = ended('described').resource
    assert.equal(attributes['service.name'], 'plinth-unit')
    assert.equal(attributes['service.version'], '9.9.9')
    assert.equal(attributes['vcs.ref.head.revision'], 'abc1234')
    assert.equal(attributes['deployment.environment.name'], 'test')
  })

  it('makes the span active inside withSpan: ids for logs, traceparent for calls out', async () => {
    await withSpan('outer', { kind: SpanKind.SERVER, attributes: { 'plinth.test': 'yes' } }, async (span) => {
      assert.equal(activeSpan(), span)
      const { traceId, spanId } = span.spanContext()
      assert.equal(activeTraceId(), traceId)
      assert.deepEqual(traceFields(), { traceId, spanId })
      assert.equal(currentTraceparent(), `00-${traceId}-${spanId}-01`)
      const headers = injectTraceHeaders({ 'content-type': 'application/json' })
      assert.deepEqual(headers, {
        'content-type': 'application/json',
        traceparent: `00-${traceId}-${spanId}-01`,
      })
    })
    const outer = ended('outer')
    assert.equal(outer.kind, SpanKind.SERVER)
    assert.equal(outer.attributes['plinth.test'], 'yes')
    assert.equal(activeSpan(), undefined, 'nothing is active once the span ended')
  })

  it('continues a received traceparent as the parent, and links to a stored one', async () => {
    await withSpan('child', { parent: contextFromTraceparent(SAMPLED_PARENT) }, async () => {})
    const child = ended('child')
    assert.equal(child.spanContext().traceId, TRACE_ID)
    assert.equal(child.parentSpanContext?.spanId, '00f067aa0ba902b7')

    const links = linkTo(SAMPLED_PARENT)
    assert.equal(links.length, 1)
    assert.equal(links[0]?.context.traceId, TRACE_ID)
    assert.deepEqual(linkTo('not-a-traceparent'), [], 'an invalid traceparent links to nothing')
    await withSpan('attempt', { links }, async () => {})
    assert.equal(ended('attempt').links[0]?.context.spanId, '00f067aa0ba902b7')
    assert.notEqual(ended('attempt').spanContext().traceId, TRACE_ID, 'a link is not a parent')
  })

  it('records a thrown error on the span (status ERROR with its message) and rethrows it', async () => {
    await assert.rejects(
      withSpan('fails', {}, async () => {
        throw new Error('disk full')
      }),
      /disk full/,
    )
    const failed = ended('fails')
    assert.equal(failed.status.code, SpanStatusCode.ERROR)
    assert.equal(failed.status.message, 'disk full')
    assert.equal(failed.events[0]?.name, 'exception')

    await assert.rejects(
      withSpan('throws a string', {}, async () => {
        throw 'plain text'
      }),
    )
    assert.equal(ended('throws a string').status.message, 'plain text')
  })

  it('logs the SDK’s own errors and warnings at warn, and drops its chatter', () => {
    const before = logs.lines.length
    diag.error('export failed', new Error('ECONNREFUSED'))
    diag.warn('queue full')
    diag.info('info chatter')
    diag.debug('debug chatter')
    diag.verbose('verbose chatter')
    const added = logs.lines.slice(before)
    assert.deepEqual(
      added.map((l) => [l.level, l.msg]),
      [
        [40, 'opentelemetry: export failed'],
        [40, 'opentelemetry: queue full'],
      ],
    )
    assert.deepEqual(added[0]?.args, ['Error: ECONNREFUSED'])
  })

  it('flushes within its timeout, and a second shutdown is the first one', async () => {
    await tracing?.flush(1000)
    assert.equal(tracing?.shutdown(), tracing?.shutdown())
  })
})

describe('tracing to an OTLP endpoint', () => {
  it('exports to <endpoint>/v1/traces, and never logs the credentials the URL carries', async () => {
    const logs = memoryLogger()
    const tracing = await startTracing(
      { ...baseConfig, otelEndpoint: 'http://collector:s3cret@127.0.0.1:9/', otelHeaders: 'x-api-key=k1' },
      { logger: logs.logger },
    )
    try {
      assert.equal(tracing?.target, 'http://collector:s3cret@127.0.0.1:9/v1/traces')
      const started = logs.lines.find((l) => l.msg === 'tracing started')
      assert.equal(started?.target, 'http://127.0.0.1:9/v1/traces')
      assert.doesNotMatch(JSON.stringify(logs.lines), /s3cret/)
    } finally {
      await tracing?.shutdown()
    }
  })
})

describe('tracing shutdown', () => {
  it('logs spans it could not export at shutdown instead of failing, and unregisters the SDK', async () => {
    const logs = memoryLogger()
    const exporter = new InMemorySpanExporter()
    exporter.shutdown = () => Promise.reject(new Error('collector gone'))
    const tracing = await startTracing(baseConfig, { logger: logs.logger, exporter })
    await withSpan('last', {}, async () => {})
    await tracing?.shutdown()
    const warned = logs.lines.find((l) => l.msg === 'tracing: spans could not be exported at shutdown')
    assert.ok(warned, 'the failed export is logged')
    assert.equal((warned.err as { message: string }).message, 'collector gone')
    // The API is back to no-op: no span is recorded.
    await withSpan('after shutdown', {}, async (span) => assert.equal(span.isRecording(), false))
    assert.equal(trace.getSpan(context.active()), undefined)
  })
})
