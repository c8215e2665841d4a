import { createPlinth } from '../../src/app/create-plinth.ts'
import { builtinModules } from '../../src/app/modules.ts'
import { testConfig } from './test-config.ts'

const KEYWORDS = new Set([
  'and',
  'or',
  'unless',
  'by',
  'without',
  'on',
  'ignoring',
  'group_left',
  'group_right',
  'offset',
  'bool',
  'inf',
  'nan',
])

/**
 * The metric names a PromQL expression reads (best effort, enough for Plinth's rules and
 * dashboards): strings, label matchers, ranges, grouping clauses, Grafana variables and function
 * names are removed, and what remains that looks like an identifier is a metric name.
 */
export function metricNamesOf(expr: string): string[] {
  const stripped = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, ' ')
    .replace(/\$\{?[A-Za-z_][\w]*(?::\w+)?\}?/g, ' ')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b\d+(?:\.\d+)?(?:e[+-]?\d+)?(?:ms|[smhdwy])?\b/g, ' ')
    .replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ')
  const names = new Set<string>()
  for (const m of stripped.matchAll(/[A-Za-z_:][\w:]*(\s*\()?/g)) {
    const [whole, call] = [m[0], m[1]]
    if (call) continue
    const word = whole.trim()
    if (KEYWORDS.has(word.toLowerCase())) continue
    if (/^\d/.test(word)) continue
    names.add(word)
  }
  return [...names]
}

/**
 * Every metric family a Plinth with the built-in modules registers (from its registry, with the
 * `_bucket`/`_count`/`_sum` series of histograms), read from a Plinth that was built but never
 * connected (no database is needed to list the families).
 */
export async function registeredMetrics(): Promise<Map<string, readonly string[]>> {
  // With Redis and point-in-time recovery configured (never connected: the Plinth is not
  // prepared), their gauges are registered too.
  const plinth = await createPlinth({
    config: testConfig({
      REDIS_URL: 'redis://127.0.0.1:1',
      DATABASE_URL: 'postgres://plinth@127.0.0.1:9/metrics',
      PLINTH_PITR_STANZA: 'plinth',
    }),
    modules: builtinModules,
  })
  try {
    const names = new Map<string, readonly string[]>()
    for (const m of plinth.metrics.registry.getMetricsAsArray()) {
      const {
        name,
        type,
        labelNames = [],
      } = m as unknown as { name: string; type: string; labelNames?: string[] }
      names.set(name, labelNames)
      if (type === 'histogram') {
        for (const s of ['_count', '_sum']) names.set(name + s, labelNames)
        names.set(`${name}_bucket`, [...labelNames, 'le'])
      }
      if (type === 'summary') for (const s of ['_count', '_sum']) names.set(name + s, labelNames)
    }
    return names
  } finally {
    await plinth.shutdown()
  }
}

/** The names of `registeredMetrics()`. */
export async function registeredMetricNames(): Promise<Set<string>> {
  return new Set((await registeredMetrics()).keys())
}
