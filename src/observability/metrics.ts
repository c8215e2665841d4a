import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client'

export interface Metrics {
  readonly registry: Registry
  readonly httpRequestDuration: Histogram<'method' | 'route' | 'status_code'>
  readonly httpRequests: Counter<'method' | 'route' | 'status_code'>
  readonly httpInFlight: Gauge
  /** Adds a gauge whose value is read at scrape time. */
  gauge(name: string, help: string, read: () => number): void
}

/** Default metrics that prom-client names `*_total` although they are gauges. */
const NON_COUNTER_TOTALS = [
  'nodejs_active_handles_total',
  'nodejs_active_requests_total',
  'nodejs_active_resources_total',
]

/**
 * A registry per Plinth instance (not prom-client's global one), so several instances can live
 * in one process (tests, benchmarks) without clashing.
 */
export function createMetrics(build: { version: string; revision: string; env: string }): Metrics {
  const registry = new Registry()
  collectDefaultMetrics({ register: registry })
  // prom-client's `*_total` gauges break the Prometheus naming rule (`_total` is for counters) and
  // fail `promtool check metrics`; `sum(nodejs_active_handles)` etc. give the same figures.
  for (const name of NON_COUNTER_TOTALS) registry.removeSingleMetric(name)

  const buildInfo = new Gauge({
    name: 'plinth_build_info',
    help: 'Build of the running Plinth; always 1.',
    labelNames: ['version', 'revision', 'node_version', 'env'],
    registers: [registry],
  })
  buildInfo.set(
    { version: build.version, revision: build.revision, node_version: process.version, env: build.env },
    1,
  )

  const httpRequestDuration = new Histogram({
    name: 'http_request_duration_seconds',
    help: 'Time from receiving a request to sending the response (for a long-lived stream, its headers), by route template.',
    labelNames: ['method', 'route', 'status_code'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  })
  const httpRequests = new Counter({
    name: 'http_requests_total',
    help: 'Requests answered, by route template, method and status.',
    labelNames: ['method', 'route', 'status_code'] as const,
    registers: [registry],
  })
  const httpInFlight = new Gauge({
    name: 'http_requests_in_flight',
    help: 'Requests received and not yet answered (a long-lived stream counts until its headers are sent).',
    registers: [registry],
  })

  return Object.freeze({
    registry,
    httpRequestDuration,
    httpRequests,
    httpInFlight,
    gauge(name: string, help: string, read: () => number) {
      new Gauge({
        name,
        help,
        registers: [registry],
        collect() {
          this.set(read())
        },
      })
    },
  })
}
