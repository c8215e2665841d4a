import {
  collectDefaultMetrics,
  Gauge,
  type MetricObjectWithValues,
  type MetricValue,
  Registry,
} from 'prom-client'

/** The RED figures of one method, route template and status: found once, recorded per request. */
export interface RequestSeries {
  /** One answered request that took `seconds`: counted in `http_requests_total` and the duration histogram. */
  record(seconds: number): void
}

export interface Metrics {
  readonly registry: Registry
  /** The series of `http_request_duration_seconds` and `http_requests_total` for these labels. */
  httpSeries(method: string, route: string, statusCode: number): RequestSeries
  /** `http_requests_in_flight`: a plain count, read at scrape time (no prom-client call per request). */
  readonly httpInFlight: { inc(): void; dec(): void }
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

  const red = createRequestMetrics()
  registry.registerMetric(red.duration as never)
  registry.registerMetric(red.requests as never)
  let inFlight = 0
  const httpInFlight = {
    inc: () => {
      inFlight++
    },
    dec: () => {
      inFlight--
    },
  }
  new Gauge({
    name: 'http_requests_in_flight',
    help: 'Requests received and not yet answered (a long-lived stream counts until its headers are sent).',
    registers: [registry],
    collect() {
      this.set(inFlight)
    },
  })

  return Object.freeze({
    registry,
    httpSeries: red.series,
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

/** The buckets of `http_request_duration_seconds`, in seconds. */
export const HTTP_DURATION_BUCKETS: readonly number[] = [
  0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
]
export const HTTP_DURATION = {
  name: 'http_request_duration_seconds',
  help: 'Time from receiving a request to sending the response (for a long-lived stream, its headers), by route template.',
} as const
export const HTTP_REQUESTS = {
  name: 'http_requests_total',
  help: 'Requests answered, by route template, method and status.',
} as const

type RedValues = Omit<MetricObjectWithValues<MetricValue<string>>, 'collect'>
type RequestLabels = { method: string; route: string; status_code: string }

class Series implements RequestSeries {
  count = 0
  sum = 0
  readonly buckets = new Float64Array(HTTP_DURATION_BUCKETS.length)
  /** False once a reset took the series off the scrape: its next observation puts it back. */
  listed = true
  readonly labels: RequestLabels
  private readonly list: (series: Series) => void
  constructor(labels: RequestLabels, list: (series: Series) => void) {
    this.labels = labels
    this.list = list
  }
  record(seconds: number): void {
    if (!this.listed) this.list(this)
    this.count++
    this.sum += seconds
    // A value above the last bound counts in +Inf (the count) only, as prom-client does.
    for (let i = 0; i < HTTP_DURATION_BUCKETS.length; i++) {
      if (seconds <= HTTP_DURATION_BUCKETS[i]!) {
        this.buckets[i]!++
        break
      }
    }
  }
}

/**
 * The RED metrics (`http_request_duration_seconds`, `http_requests_total`), accumulated in plain
 * numbers per series and turned into prom-client's metric values at scrape time. A prom-client
 * child hashes its label set on every `observe`/`inc` (~3 % of a request's CPU); here a request
 * costs three Map look-ups and a few additions. The scrape output is prom-client's, name for name,
 * label for label and value for value (test/metrics-red.test.ts compares them).
 */
function createRequestMetrics() {
  // route → method → status → series: no key string built per request.
  const byRoute = new Map<string, Map<string, Map<number, Series>>>()
  // Scrape order: first observation first, as prom-client lists its series.
  const listed: Series[] = []
  const list = (series: Series) => {
    series.listed = true
    listed.push(series)
  }
  const series = (method: string, route: string, statusCode: number): RequestSeries => {
    let byMethod = byRoute.get(route)
    if (!byMethod) {
      byMethod = new Map()
      byRoute.set(route, byMethod)
    }
    let byStatus = byMethod.get(method)
    if (!byStatus) {
      byStatus = new Map()
      byMethod.set(method, byStatus)
    }
    let s = byStatus.get(statusCode)
    if (!s) {
      s = new Series({ method, route, status_code: String(statusCode) }, list)
      s.listed = false
      byStatus.set(statusCode, s)
    }
    return s
  }
  const reset = () => {
    for (const s of listed) {
      s.listed = false
      s.count = 0
      s.sum = 0
      s.buckets.fill(0)
    }
    listed.length = 0
  }
  // Only series observed at least once are listed (prom-client creates a series on its first observation).
  const durationValues = (): MetricValue<string>[] => {
    const values: MetricValue<string>[] = []
    const bucket = `${HTTP_DURATION.name}_bucket`
    for (const s of listed) {
      if (s.count === 0) continue
      let acc = 0
      for (let i = 0; i < HTTP_DURATION_BUCKETS.length; i++) {
        acc += s.buckets[i]!
        values.push(value({ le: HTTP_DURATION_BUCKETS[i]! }, s.labels, acc, bucket, null))
      }
      values.push(value({ le: '+Inf' }, s.labels, s.count, bucket, null))
      values.push(value({}, s.labels, s.sum, `${HTTP_DURATION.name}_sum`, undefined))
      values.push(value({}, s.labels, s.count, `${HTTP_DURATION.name}_count`, undefined))
    }
    return values
  }
  const duration = {
    ...HTTP_DURATION,
    type: 'histogram',
    aggregator: 'sum',
    labelNames: ['method', 'route', 'status_code'],
    // As prom-client's Histogram: `getForPromString` keeps the series labels apart, `get` merges them in.
    async getForPromString(): Promise<RedValues> {
      return { ...HTTP_DURATION, type: 'histogram' as never, aggregator: 'sum', values: durationValues() }
    },
    async get(): Promise<RedValues> {
      const data = await duration.getForPromString()
      data.values = data.values.map(splay)
      return data
    },
    reset,
  }
  const requests = {
    ...HTTP_REQUESTS,
    type: 'counter',
    aggregator: 'sum',
    labelNames: ['method', 'route', 'status_code'],
    async get(): Promise<RedValues> {
      return {
        ...HTTP_REQUESTS,
        type: 'counter' as never,
        aggregator: 'sum',
        values: listed.filter((s) => s.count > 0).map((s) => ({ value: s.count, labels: s.labels })),
      }
    },
    reset,
  }
  return { series, duration, requests }
}

function value(
  labels: Record<string, string | number>,
  sharedLabels: RequestLabels,
  v: number,
  metricName: string,
  exemplar: null | undefined,
): MetricValue<string> {
  return { labels, sharedLabels, value: v, metricName, exemplar } as MetricValue<string>
}

function splay(bucket: MetricValue<string>): MetricValue<string> {
  const { sharedLabels, labels, ...rest } = bucket as MetricValue<string> & { sharedLabels: RequestLabels }
  return { ...rest, labels: { ...labels, ...sharedLabels } } as MetricValue<string>
}
