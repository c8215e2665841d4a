/**
 * Tracing as the rest of Plinth sees it: a thin layer over `@opentelemetry/api` (a few kilobytes,
 * no SDK). While no SDK is started every call here is a no-op: no span is recorded, no header is
 * written, `traceparent()` is undefined. `startTracing` loads the SDK (tracing-sdk.ts) only when an
 * OTLP endpoint is configured, or a test hands it an exporter.
 */
import {
  type Attributes,
  type Context,
  context,
  type Link,
  propagation,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  trace,
} from '@opentelemetry/api'
import type { SpanExporter } from '@opentelemetry/sdk-trace'
import type { Logger } from 'pino'
import type { Tracing, TracingConfig } from './tracing-types.ts'

export type { Span }
export { SpanKind, SpanStatusCode }

/** The instrumentation scope of Plinth's own spans. */
export const TRACER_NAME = 'plinth'

export type { Tracing, TracingConfig }

/** True when the configuration asks for traces (an OTLP endpoint, and the SDK not disabled). */
export function tracingConfigured(config: TracingConfig): boolean {
  return !config.otelSdkDisabled && (config.otelEndpoint ?? config.otelTracesEndpoint) !== undefined
}

/**
 * Starts the tracing SDK when the configuration asks for it (or `exporter` is given), and returns
 * undefined otherwise, having loaded nothing. Start it before the database driver is first used;
 * the pg and ioredis instrumentations patch the loaded drivers' prototypes, whatever the import order.
 *
 * @example
 * const tracing = await startTracing(config, { logger })
 * // … at shutdown
 * await tracing?.shutdown()
 */
export async function startTracing(
  config: TracingConfig,
  options: { logger: Logger; exporter?: SpanExporter; version?: string },
): Promise<Tracing | undefined> {
  if (!options.exporter && !tracingConfigured(config)) return undefined
  const sdk = await import('./tracing-sdk.ts')
  return sdk.startTracingSdk(config, options)
}

/** The active span, when one is recording (undefined while tracing is off or the trace is not sampled). */
export function activeSpan(): Span | undefined {
  const span = trace.getSpan(context.active())
  return span?.isRecording() ? span : undefined
}

/**
 * `traceId` and `spanId` of the active span for a log line; an empty object outside a trace. Used as
 * pino's `mixin` when tracing is on (see createLogger).
 */
export function traceFields(): { traceId?: string; spanId?: string } {
  const span = trace.getSpan(context.active())
  if (!span) return {}
  const { traceId, spanId } = span.spanContext()
  return { traceId, spanId }
}

/** The trace id of the active span, if any (also for unsampled traces: it still joins logs). */
export function activeTraceId(): string | undefined {
  return trace.getSpan(context.active())?.spanContext().traceId
}

/** The W3C `traceparent` of the active context, or undefined when there is none (tracing off). */
export function currentTraceparent(): string | undefined {
  const carrier: Record<string, string> = {}
  propagation.inject(context.active(), carrier)
  return carrier.traceparent
}

/** Writes `traceparent` (and `tracestate`) of the active context into outgoing headers. */
export function injectTraceHeaders(headers: Record<string, string>): Record<string, string> {
  propagation.inject(context.active(), headers)
  return headers
}

/** The context a stored or received `traceparent` names (the root context when absent or invalid). */
export function contextFromTraceparent(
  traceparent: string | undefined,
  parent: Context = ROOT_CONTEXT,
): Context {
  if (!traceparent) return parent
  return propagation.extract(parent, { traceparent })
}

export interface SpanOptions {
  readonly kind?: SpanKind
  readonly attributes?: Attributes
  /** The parent (default: the active context). */
  readonly parent?: Context
  readonly links?: Link[]
}

/**
 * Runs `fn` inside a new active span, ends it when `fn` settles, and records a thrown error on it
 * (status ERROR). While tracing is off this is a plain call of `fn` with a non-recording span.
 *
 * @example
 * await withSpan('mail send', { kind: SpanKind.CLIENT }, () => transport.sendMail(message))
 */
export function withSpan<T>(name: string, options: SpanOptions, fn: (span: Span) => Promise<T>): Promise<T> {
  const tracer = trace.getTracer(TRACER_NAME)
  const parent = options.parent ?? context.active()
  const span = tracer.startSpan(
    name,
    {
      ...(options.kind === undefined ? {} : { kind: options.kind }),
      ...(options.attributes ? { attributes: options.attributes } : {}),
      ...(options.links ? { links: options.links } : {}),
    },
    parent,
  )
  return context.with(trace.setSpan(parent, span), async () => {
    try {
      return await fn(span)
    } catch (err) {
      recordError(span, err)
      throw err
    } finally {
      span.end()
    }
  })
}

/** Marks the span failed with the error (its type and message; no stack in attributes beyond the event's). */
export function recordError(span: Span, err: unknown): void {
  if (!span.isRecording()) return
  span.recordException(err instanceof Error ? err : String(err))
  span.setStatus({ code: SpanStatusCode.ERROR, message: err instanceof Error ? err.message : String(err) })
}

/** The link to the span a `traceparent` names, for spans that follow from it (a job's attempts). */
export function linkTo(traceparent: string | undefined): Link[] {
  if (!traceparent) return []
  const span = trace.getSpan(contextFromTraceparent(traceparent))
  return span ? [{ context: span.spanContext() }] : []
}
