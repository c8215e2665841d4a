/**
 * The OpenTelemetry SDK, loaded only when tracing is on (tracing.ts imports this file dynamically):
 * a tracer provider with the configured sampler, a batch processor over the OTLP HTTP/protobuf
 * exporter (or the exporter a test gives), the AsyncLocalStorage context manager, the W3C
 * `traceparent` propagator, and the pg and ioredis instrumentations applied to the loaded drivers.
 */
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { context, diag, propagation, trace } from '@opentelemetry/api'
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import { parseKeyPairsIntoRecord, W3CTraceContextPropagator } from '@opentelemetry/core'
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-proto'
import type { InstrumentationModuleDefinition } from '@opentelemetry/instrumentation'
import { IORedisInstrumentation } from '@opentelemetry/instrumentation-ioredis'
import { PgInstrumentation } from '@opentelemetry/instrumentation-pg'
import { resourceFromAttributes } from '@opentelemetry/resources'
import {
  AlwaysOffSampler,
  AlwaysOnSampler,
  BatchSpanProcessor,
  ParentBasedSampler,
  type Sampler,
  SimpleSpanProcessor,
  type SpanExporter,
  TraceIdRatioBasedSampler,
  TracerProvider,
} from '@opentelemetry/sdk-trace'
import type { Logger } from 'pino'
import type { Tracing, TracingConfig } from './tracing-types.ts'

/** The sampler `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` name (the OTel SDK's names). */
export function samplerOf(
  config: Pick<TracingConfig, 'otelTracesSampler' | 'otelTracesSamplerArg'>,
): Sampler {
  const ratio = new TraceIdRatioBasedSampler(config.otelTracesSamplerArg)
  switch (config.otelTracesSampler) {
    case 'always_on':
      return new AlwaysOnSampler()
    case 'always_off':
      return new AlwaysOffSampler()
    case 'traceidratio':
      return ratio
    case 'parentbased_always_off':
      return new ParentBasedSampler({ root: new AlwaysOffSampler() })
    case 'parentbased_traceidratio':
      return new ParentBasedSampler({ root: ratio })
    default:
      return new ParentBasedSampler({ root: new AlwaysOnSampler() })
  }
}

/** Where traces go: the traces URL as given, or `<endpoint>/v1/traces`. */
export function tracesUrlOf(config: Pick<TracingConfig, 'otelEndpoint' | 'otelTracesEndpoint'>): string {
  if (config.otelTracesEndpoint) return config.otelTracesEndpoint
  if (!config.otelEndpoint) throw new Error('no OTLP endpoint configured')
  return `${config.otelEndpoint.replace(/\/+$/, '')}/v1/traces`
}

/** The URL as it may be logged: user name and password (if the URL carries them) removed. */
function withoutCredentials(target: string): string {
  if (!URL.canParse(target)) return target
  const url = new URL(target)
  url.username = ''
  url.password = ''
  return url.href
}

const require = createRequire(import.meta.url)

function packageVersion(name: string, from: NodeRequire = require): string | undefined {
  let dir = dirname(from.resolve(name))
  for (let i = 0; i < 6; i++) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as {
        name?: string
        version?: string
      }
      if (pkg.name === name) return pkg.version
    } catch {
      // no package.json at this level
    }
    dir = dirname(dir)
  }
  return undefined
}

/**
 * Applies an instrumentation to drivers already loaded. The instrumentations' own hooks patch a
 * module when it is `require`d after they are enabled; Plinth imports pg and ioredis as ES modules,
 * often before tracing starts (tests, embedders), which those hooks do not see. Patching the
 * loaded classes' prototypes (what the hooks would do) works whatever the import order, and needs
 * no loader hook (`--import …/hook.mjs`) in front of every import. Returns the undo.
 */
function patchLoaded(
  instrumentation: { getModuleDefinitions(): InstrumentationModuleDefinition[] },
  modules: Record<string, unknown>,
  log: Logger,
): () => void {
  const undo: (() => void)[] = []
  for (const def of instrumentation.getModuleDefinitions()) {
    const exports = modules[def.name]
    if (!exports || !def.patch) continue
    try {
      def.patch(
        exports,
        packageVersion(def.name, def.name === 'pg-pool' ? createRequire(require.resolve('pg')) : require),
      )
      undo.push(() => def.unpatch?.(exports))
    } catch (err) {
      log.warn({ err, module: def.name }, 'tracing: could not instrument a driver')
    }
  }
  return () => {
    for (const u of undo) u()
  }
}

/** Starts the SDK (see `startTracing` in tracing.ts, the only caller). */
export async function startTracingSdk(
  config: TracingConfig,
  options: { logger: Logger; exporter?: SpanExporter; version?: string },
): Promise<Tracing> {
  const log = options.logger.child({ component: 'tracing' })
  // The SDK's own complaints (an export that failed, a dropped batch) go to Plinth's log at warn.
  diag.setLogger(
    {
      error: (message, ...args) => log.warn({ args: args.map(String) }, `opentelemetry: ${message}`),
      warn: (message, ...args) => log.warn({ args: args.map(String) }, `opentelemetry: ${message}`),
      info: () => {},
      debug: () => {},
      verbose: () => {},
    },
    { suppressOverrideMessage: true },
  )
  const target = options.exporter ? 'custom' : tracesUrlOf(config)
  const exporter =
    options.exporter ??
    new OTLPTraceExporter({
      url: target,
      headers: config.otelHeaders ? parseKeyPairsIntoRecord(config.otelHeaders) : {},
      timeoutMillis: 10_000,
    })
  const provider = new TracerProvider({
    sampler: samplerOf(config),
    resource: resourceFromAttributes({
      'service.name': config.otelServiceName,
      ...(options.version ? { 'service.version': options.version } : {}),
      'deployment.environment.name': config.env,
      ...(config.revision ? { 'vcs.ref.head.revision': config.revision } : {}),
    }),
    // Tests read spans as soon as they end; an exporter over the network gets batches.
    spanProcessors: [
      options.exporter
        ? new SimpleSpanProcessor({ exporter })
        : new BatchSpanProcessor({ exporter, scheduledDelayMillis: 2000, maxQueueSize: 4096 }),
    ],
  })
  const contextManager = new AsyncLocalStorageContextManager().enable()
  context.setGlobalContextManager(contextManager)
  propagation.setGlobalPropagator(new W3CTraceContextPropagator())
  trace.setGlobalTracerProvider(provider)

  const pg = new PgInstrumentation({ enabled: false, requireParentSpan: true })
  const redis = new IORedisInstrumentation({ enabled: false, requireParentSpan: true })
  pg.setTracerProvider(provider)
  redis.setTracerProvider(provider)
  const pgMain = require('pg') as unknown
  const undo = [
    patchLoaded(pg, { pg: pgMain, 'pg-pool': createRequire(require.resolve('pg'))('pg-pool') }, log),
    patchLoaded(redis, { ioredis: require('ioredis') }, log),
  ]
  log.info(
    {
      target: withoutCredentials(target),
      sampler: config.otelTracesSampler,
      ratio: config.otelTracesSamplerArg,
    },
    'tracing started',
  )

  let stopped: Promise<void> | undefined
  return {
    target,
    async flush(timeoutMs = 5000) {
      await Promise.race([provider.forceFlush(), new Promise((r) => setTimeout(r, timeoutMs).unref())])
    },
    shutdown() {
      stopped ??= (async () => {
        for (const u of undo) u()
        try {
          await provider.shutdown()
        } catch (err) {
          log.warn({ err }, 'tracing: spans could not be exported at shutdown')
        }
        trace.disable()
        propagation.disable()
        context.disable()
        diag.disable()
      })()
      return stopped
    },
  }
}
