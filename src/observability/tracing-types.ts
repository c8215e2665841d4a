import type { PlinthConfig } from '../config/config.schema.ts'

/** The configuration keys tracing reads (OTEL_* and the build facts). */
export type TracingConfig = Pick<
  PlinthConfig,
  | 'otelEndpoint'
  | 'otelTracesEndpoint'
  | 'otelHeaders'
  | 'otelServiceName'
  | 'otelTracesSampler'
  | 'otelTracesSamplerArg'
  | 'otelSdkDisabled'
  | 'env'
  | 'revision'
>

/** A started tracing SDK. */
export interface Tracing {
  /** Where spans go: the OTLP URL, or `custom` for an exporter given in code (tests). */
  readonly target: string
  /** Exports what is buffered (at most `timeoutMs`). */
  flush(timeoutMs?: number): Promise<void>
  /** Flushes, then unregisters the SDK's globals and undoes the database and Redis instrumentation. */
  shutdown(): Promise<void>
}
