import assert from 'node:assert/strict'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { before, describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'
import { parse } from 'yaml'
import { metricNamesOf, registeredMetrics } from './helpers/promql-names.ts'

// The Grafana dashboards of deploy/grafana: each parses, and every query names only metrics a
// Plinth with the built-in modules registers (read from its registry, labels included), series
// recorded by deploy/prometheus/rules.

const root = fileURLToPath(new URL('..', import.meta.url))
const dir = join(root, 'deploy/grafana')
const files = readdirSync(dir).filter((f) => f.endsWith('.json'))
const recorded = new Set(
  readdirSync(join(root, 'deploy/prometheus/rules'))
    .filter((f) => f.endsWith('.yml'))
    .flatMap((f) =>
      (
        parse(readFileSync(join(root, 'deploy/prometheus/rules', f), 'utf8')) as {
          groups: { rules: { record?: string }[] }[]
        }
      ).groups
        .flatMap((g) => g.rules)
        .flatMap((r) => (r.record ? [r.record] : [])),
    ),
)

interface Panel {
  id: number
  title: string
  type: string
  targets?: { expr: string; refId: string }[]
  gridPos: { x: number; y: number; w: number; h: number }
}
interface Dashboard {
  uid: string
  title: string
  panels: Panel[]
  templating: { list: { name: string; type: string; query?: string | { query: string } }[] }
}
const dashboards = files.map((f) => ({
  file: f,
  d: JSON.parse(readFileSync(join(dir, f), 'utf8')) as Dashboard,
}))

describe('Grafana dashboards (deploy/grafana)', () => {
  let exported: Map<string, readonly string[]>
  before(async () => {
    exported = await registeredMetrics()
  })

  it('covers RED per route, jobs, the database pool, Redis, backups and security', () => {
    assert.deepEqual(dashboards.map((x) => x.d.uid).sort(), [
      'plinth-backups',
      'plinth-database',
      'plinth-jobs',
      'plinth-red',
      'plinth-redis',
      'plinth-security',
    ])
  })

  it('parse, with unique uids and panel ids, titled panels that each have a query, inside a 24-column grid', () => {
    for (const { file, d } of dashboards) {
      assert.ok(d.title && d.uid, file)
      assert.ok(d.panels.length > 0, file)
      const ids = d.panels.map((p) => p.id)
      assert.equal(new Set(ids).size, ids.length, `${file}: panel ids`)
      for (const p of d.panels) {
        assert.ok(p.title, `${file}: panel ${p.id} title`)
        assert.ok((p.targets ?? []).length > 0, `${file}: ${p.title} has no query`)
        for (const t of p.targets ?? []) assert.ok(t.expr.trim(), `${file}: ${p.title} ${t.refId}`)
        assert.ok(p.gridPos.x + p.gridPos.w <= 24, `${file}: ${p.title} overflows the grid`)
      }
    }
    assert.equal(new Set(dashboards.map((x) => x.d.uid)).size, dashboards.length)
  })

  it('query only metrics Plinth exports (or recording rules), by labels they have', () => {
    const problems: string[] = []
    const known = (name: string) => exported.has(name) || recorded.has(name)
    for (const { file, d } of dashboards) {
      for (const p of d.panels)
        for (const t of p.targets ?? [])
          for (const name of metricNamesOf(t.expr))
            if (!known(name)) problems.push(`${file} "${p.title}": ${name}`)
      for (const v of d.templating.list) {
        if (v.type !== 'query') continue
        const q = typeof v.query === 'string' ? v.query : (v.query?.query ?? '')
        const m = /^label_values\((\w+),\s*(\w+)\)$/.exec(q)
        assert.ok(m, `${file}: variable ${v.name} is label_values(metric, label)`)
        const labels = exported.get(m[1]!)
        if (!labels) problems.push(`${file} variable ${v.name}: ${m[1]}`)
        // `instance` is the scrape target's, added by Prometheus.
        else if (m[2] !== 'instance' && !labels.includes(m[2]!))
          problems.push(`${file} variable ${v.name}: ${m[1]} has no label ${m[2]}`)
      }
    }
    assert.deepEqual(problems, [])
  })

  it('group and filter by labels the metrics have', () => {
    const problems: string[] = []
    for (const { file, d } of dashboards)
      for (const p of d.panels)
        for (const t of p.targets ?? []) {
          const names = metricNamesOf(t.expr).filter((n) => exported.has(n))
          const allowed = new Set(['instance', 'job', ...names.flatMap((n) => exported.get(n) ?? [])])
          const used = [
            ...[...t.expr.matchAll(/\bby \(([^)]*)\)/g)].flatMap((m) => m[1]!.split(',')),
            ...[...t.expr.matchAll(/[{,]\s*(\w+)\s*(?:=~|!~|!=|=)/g)].map((m) => m[1]!),
          ].map((s) => s.trim())
          if (names.length === 0) continue
          for (const label of used)
            if (!allowed.has(label)) problems.push(`${file} "${p.title}": label ${label}`)
        }
    assert.deepEqual(problems, [])
  })
})
