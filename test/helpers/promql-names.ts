import { createPlinth } from '../../src/app/create-plinth.ts'
import { builtinModules } from '../../src/app/modules.ts'
import { backupServiceOf } from '../../src/modules/backups/backups.module.ts'
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
export async function registeredMetricNames(): Promise<Set<string>> {
  // With Redis configured (never connected: the Plinth is not prepared), its gauge is registered too.
  const plinth = await createPlinth({
    config: testConfig({ REDIS_URL: 'redis://127.0.0.1:1' }),
    modules: builtinModules,
  })
  try {
    // The backup service (and its metrics) is built on first use.
    backupServiceOf(plinth.context)
    const names = new Set<string>()
    for (const m of plinth.metrics.registry.getMetricsAsArray()) {
      const { name, type } = m as unknown as { name: string; type: string }
      names.add(name)
      if (type === 'histogram') for (const s of ['_bucket', '_count', '_sum']) names.add(name + s)
      if (type === 'summary') for (const s of ['_count', '_sum']) names.add(name + s)
    }
    return names
  } finally {
    await plinth.shutdown()
  }
}
