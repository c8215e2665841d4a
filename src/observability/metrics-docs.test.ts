import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry, Summary } from 'prom-client'
import { renderMetricsDocs } from './metrics-docs.ts'

describe('the metrics page', () => {
  it('lists every metric with its type and labels, sorted, without the runtime defaults (process_*, nodejs_*)', () => {
    const registry = new Registry()
    collectDefaultMetrics({ register: registry })
    new Histogram({
      name: 'plinth_b_seconds',
      help: 'How long b takes',
      labelNames: ['route'],
      registers: [registry],
    })
    new Counter({ name: 'plinth_a_total', help: 'As | pipes\nand lines', registers: [registry] })
    new Gauge({ name: 'plinth_c', help: 'C now', labelNames: ['x', 'y'], registers: [registry] })
    new Summary({ name: 'plinth_d', help: 'D quantiles', registers: [registry] })
    const page = renderMetricsDocs(registry)
    const rows = page.split('\n').filter((l) => l.startsWith('| `'))
    assert.deepEqual(rows, [
      '| `plinth_a_total` | counter | — | As \\| pipes and lines |',
      '| `plinth_b_seconds` | histogram | `route` | How long b takes |',
      '| `plinth_c` | gauge | `x`, `y` | C now |',
      '| `plinth_d` | summary | — | D quantiles |',
    ])
  })

  it('answers each business question with the metrics registered, or "none"', () => {
    const registry = new Registry()
    new Counter({ name: 'plinth_users_registered_total', help: 'u', registers: [registry] })
    new Counter({ name: 'plinth_jobs_failed_total', help: 'f', registers: [registry] })
    const page = renderMetricsDocs(registry)
    assert.match(page, /^\| Users registered \| `plinth_users_registered_total` \|$/m)
    assert.match(page, /^\| Jobs processed \| `plinth_jobs_failed_total` \|$/m)
    assert.match(page, /^\| Backups \| none \|$/m)
  })

  it('calls a metric of another kind "untyped"', () => {
    const registry = new Registry()
    registry.registerMetric({
      name: 'plinth_custom',
      help: 'A hand-made metric',
      get: async () => ({
        name: 'plinth_custom',
        help: 'A hand-made metric',
        type: 'gauge',
        values: [],
        aggregator: 'sum',
      }),
      reset: () => {},
    } as never)
    assert.match(
      renderMetricsDocs(registry),
      /^\| `plinth_custom` \| untyped \| — \| A hand-made metric \|$/m,
    )
  })
})
