import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { Counter, Histogram, Registry } from 'prom-client'
import {
  createMetrics,
  HTTP_DURATION,
  HTTP_DURATION_BUCKETS,
  HTTP_REQUESTS,
} from '../src/observability/metrics.ts'

const NAMES: string[] = [HTTP_DURATION.name, HTTP_REQUESTS.name]

/** prom-client's own Histogram and Counter, as metrics.ts defined them before it accumulated itself. */
function reference() {
  const registry = new Registry()
  const labelNames = ['method', 'route', 'status_code'] as const
  const duration = new Histogram({
    ...HTTP_DURATION,
    labelNames,
    buckets: [...HTTP_DURATION_BUCKETS],
    registers: [registry],
  })
  const requests = new Counter({ ...HTTP_REQUESTS, labelNames, registers: [registry] })
  return {
    registry,
    record(method: string, route: string, status: number, seconds: number) {
      const labels = { method, route, status_code: String(status) }
      duration.labels(labels).observe(seconds)
      requests.labels(labels).inc()
    },
  }
}

/** The scrape text of the RED metrics only (the default process metrics differ from run to run). */
async function scrape(registry: Registry): Promise<string> {
  return (await Promise.all(NAMES.map((name) => registry.getSingleMetricAsString(name)))).join('\n\n')
}

async function json(registry: Registry) {
  const all = await registry.getMetricsAsJSON()
  return all.filter((m) => NAMES.includes(m.name))
}

// Durations on and around every bucket bound, above the last one, and zero.
const SAMPLES: [string, string, number, number][] = []
for (const [i, bound] of HTTP_DURATION_BUCKETS.entries()) {
  SAMPLES.push(['GET', '/api/v1', 200, bound])
  SAMPLES.push(['GET', '/api/v1/things/:id', i % 2 ? 404 : 200, bound * 0.999])
  SAMPLES.push(['POST', '/api/v1/things', 201, bound * 1.001])
}
SAMPLES.push(
  ['GET', 'unmatched', 404, 0],
  ['DELETE', '/api/v1/things/:id', 204, 42.5],
  ['GET', '/api/v1', 200, 0.0123],
)

describe('RED metrics (http_request_duration_seconds, http_requests_total)', () => {
  it('scrape exactly as prom-client Histogram and Counter would: names, help, labels, values, order', async () => {
    const metrics = createMetrics({ version: '0', revision: 'x', env: 'test' })
    const ref = reference()
    assert.equal(await scrape(metrics.registry), await scrape(ref.registry), 'before any request')
    for (const [method, route, status, seconds] of SAMPLES) {
      metrics.httpSeries(method, route, status).record(seconds)
      ref.record(method, route, status, seconds)
    }
    const text = await scrape(metrics.registry)
    assert.equal(text, await scrape(ref.registry))
    assert.match(
      text,
      /^http_request_duration_seconds_bucket\{le="\+Inf",method="DELETE",route="\/api\/v1\/things\/:id",status_code="204"\} 1$/m,
    )
    assert.deepEqual(await json(metrics.registry), await json(ref.registry))
    // The whole exposition carries them too, with their TYPE lines.
    const all = await metrics.registry.metrics()
    assert.match(all, /^# TYPE http_request_duration_seconds histogram$/m)
    assert.match(all, /^# TYPE http_requests_total counter$/m)
    assert.match(all, /^http_requests_total\{method="GET",route="\/api\/v1",status_code="200"\} 12$/m)
  })

  it('a reset empties them as prom-client does; the series come back on their next request', async () => {
    const metrics = createMetrics({ version: '0', revision: 'x', env: 'test' })
    const ref = reference()
    const series = metrics.httpSeries('GET', '/api/v1', 200)
    series.record(0.01)
    ref.record('GET', '/api/v1', 200, 0.01)
    metrics.registry.resetMetrics()
    ref.registry.resetMetrics()
    assert.equal(await scrape(metrics.registry), await scrape(ref.registry))
    series.record(0.2)
    ref.record('GET', '/api/v1', 200, 0.2)
    assert.equal(await scrape(metrics.registry), await scrape(ref.registry))
  })

  it('http_requests_in_flight counts requests received and not yet answered', async () => {
    const metrics = createMetrics({ version: '0', revision: 'x', env: 'test' })
    const scrapeInFlight = () => metrics.registry.getSingleMetricAsString('http_requests_in_flight')
    assert.match(await scrapeInFlight(), /^# TYPE http_requests_in_flight gauge\nhttp_requests_in_flight 0$/m)
    metrics.httpInFlight.inc()
    metrics.httpInFlight.inc()
    metrics.httpInFlight.dec()
    assert.match(await scrapeInFlight(), /^http_requests_in_flight 1$/m)
  })
})
