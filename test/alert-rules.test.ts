import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { before, describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'
import { parse } from 'yaml'
import { metricNamesOf, registeredMetricNames } from './helpers/promql-names.ts'
import { skipUnlessPromtool } from './helpers/promtool.ts'
import { REQUIRE_SERVICES } from './helpers/services.ts'

// The shipped Prometheus rules and Alertmanager example (deploy/prometheus, deploy/alertmanager):
// promtool checks and unit-tests them, and these tests hold them to the conventions the runbooks
// and the built-in evaluator depend on.

const root = fileURLToPath(new URL('..', import.meta.url))
const rulesDir = join(root, 'deploy/prometheus/rules')
const testsDir = join(rulesDir, 'tests')
const ruleFiles = readdirSync(rulesDir).filter((f) => f.endsWith('.yml'))
const testFiles = readdirSync(testsDir).filter((f) => f.endsWith('.yml'))

interface Rule {
  alert?: string
  record?: string
  expr: string
  for?: string
  labels?: Record<string, string>
  annotations?: Record<string, string>
}
const rules: Rule[] = ruleFiles.flatMap((f) =>
  (parse(readFileSync(join(rulesDir, f), 'utf8')) as { groups: { rules: Rule[] }[] }).groups.flatMap(
    (g) => g.rules,
  ),
)
const alerts = rules.filter((r) => r.alert)
const recorded = new Set(rules.flatMap((r) => (r.record ? [r.record] : [])))

/** Series Prometheus itself makes. */
const PROMETHEUS_SERIES = new Set(['up'])

/** Runs a tool; its unit tests replay hours of series (about 15 s of CPU), so the bound is generous for a loaded machine. */
function run(
  cmd: string,
  args: string[],
  timeoutMs = 300_000,
): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'], timeout: timeoutMs })
    let output = ''
    child.stdout.on('data', (d) => (output += d))
    child.stderr.on('data', (d) => (output += d))
    child.on('error', reject)
    child.on('close', (code) => resolve({ code, output }))
  })
}

describe('Prometheus rules (deploy/prometheus/rules)', () => {
  it('pass promtool check rules', async (t) => {
    const skip = await skipUnlessPromtool()
    if (skip) return t.skip(skip)
    const r = await run('promtool', ['check', 'rules', ...ruleFiles.map((f) => join(rulesDir, f))])
    assert.equal(r.code, 0, r.output)
  })

  it('pass their promtool unit tests (every alert fires when it should and stays silent otherwise)', async (t) => {
    const skip = await skipUnlessPromtool()
    if (skip) return t.skip(skip)
    const r = await run('promtool', ['test', 'rules', ...testFiles.map((f) => join(testsDir, f))])
    assert.equal(r.code, 0, r.output)
    assert.match(r.output, /SUCCESS/)
  })

  it('unit-test every alert both firing and silent', () => {
    const fired = new Set<string>()
    const silent = new Set<string>()
    for (const f of testFiles) {
      const doc = parse(readFileSync(join(testsDir, f), 'utf8')) as {
        tests: { alert_rule_test?: { alertname: string; exp_alerts?: unknown[] }[] }[]
      }
      for (const c of doc.tests)
        for (const a of c.alert_rule_test ?? [])
          ((a.exp_alerts ?? []).length ? fired : silent).add(a.alertname)
    }
    const names = alerts.map((a) => a.alert!)
    assert.deepEqual(
      names.filter((n) => !fired.has(n)),
      [],
      'alerts without a test where they fire',
    )
    assert.deepEqual(
      names.filter((n) => !silent.has(n)),
      [],
      'alerts without a test where they stay silent',
    )
    for (const n of [...fired, ...silent]) assert.ok(names.includes(n), `test of an unknown alert ${n}`)
  })

  it('give every alert a severity (page|ticket), a summary, a description and a runbook page that exists', () => {
    assert.ok(alerts.length >= 20)
    for (const a of alerts) {
      assert.match(a.labels?.severity ?? '', /^(page|ticket)$/, `${a.alert}: severity`)
      assert.ok(a.annotations?.summary, `${a.alert}: summary`)
      assert.ok(a.annotations?.description, `${a.alert}: description`)
      const url = a.annotations?.runbook_url ?? ''
      assert.match(url, /^docs\/operations\/alerts\/[a-z0-9-]+\.md$/, `${a.alert}: runbook_url`)
      assert.ok(existsSync(join(root, url)), `${a.alert}: ${url} does not exist`)
      const page = readFileSync(join(root, url), 'utf8')
      assert.ok(page.includes(a.alert!), `${url} does not name ${a.alert}`)
    }
    const names = alerts.map((a) => a.alert)
    assert.equal(new Set(names).size, names.length, 'alert names are unique')
  })

  it('read only metrics Plinth exports from the first scrape (or recorded by the rules)', async () => {
    const exported = await registeredMetricNames()
    const unknown: string[] = []
    for (const r of rules)
      for (const name of metricNamesOf(r.expr))
        if (!exported.has(name) && !recorded.has(name) && !PROMETHEUS_SERIES.has(name))
          unknown.push(`${r.alert ?? r.record}: ${name}`)
    assert.deepEqual(unknown, [])
  })

  it('extracts metric names from PromQL', () => {
    assert.deepEqual(
      metricNamesOf(
        'sum by (route, le) (rate(http_request_duration_seconds_bucket{route!~"/live|x",le="0.5"}[5m])) / on() group_left() plinth:x offset 10m > 0.5 and $var',
      ),
      ['http_request_duration_seconds_bucket', 'plinth:x'],
    )
  })
})

describe('Alertmanager example (deploy/alertmanager/alertmanager.yml)', () => {
  const file = join(root, 'deploy/alertmanager/alertmanager.yml')
  let amtool = false
  before(async () => {
    amtool = await run('amtool', ['--version']).then(
      (r) => r.code === 0,
      () => false,
    )
    if (!amtool && REQUIRE_SERVICES)
      throw new Error('amtool not found: apt-get install prometheus-alertmanager (.ci/run does)')
  })

  it('passes amtool check-config', async (t) => {
    if (!amtool) return t.skip('amtool not found (Debian: apt-get install prometheus-alertmanager)')
    const r = await run('amtool', ['check-config', file])
    assert.equal(r.code, 0, r.output)
  })

  it('routes pages to the page receiver (and a copy to tickets) and tickets to tickets', async (t) => {
    if (!amtool) return t.skip('amtool not found')
    const route = async (...labels: string[]) =>
      (await run('amtool', ['config', 'routes', 'test', `--config.file=${file}`, ...labels])).output
        .split('\n')
        .filter((l) => l && !l.startsWith('Warning'))
        .join('')
    assert.equal(await route('severity=page', 'alertname=PlinthInstanceDown'), 'page,ticket')
    assert.equal(await route('severity=ticket', 'alertname=PlinthBackupFailed'), 'ticket')
  })

  it('inhibits tickets of an SLO under its page, and names only severities and alerts that exist', () => {
    const cfg = parse(readFileSync(file, 'utf8')) as {
      inhibit_rules: { source_matchers: string[]; target_matchers: string[]; equal?: string[] }[]
    }
    const sloRule = cfg.inhibit_rules.find((r) => r.equal?.includes('slo'))
    assert.ok(sloRule, 'an inhibition of tickets by pages of the same SLO')
    assert.ok(sloRule.source_matchers.includes('severity="page"'))
    assert.ok(sloRule.target_matchers.includes('severity="ticket"'))
    const names = new Set(alerts.map((a) => a.alert!))
    for (const r of cfg.inhibit_rules)
      for (const m of [...r.source_matchers, ...r.target_matchers]) {
        const exact = /^alertname="(.+)"$/.exec(m)
        if (exact) assert.ok(names.has(exact[1]!), `inhibition names unknown alert ${exact[1]}`)
        const re = /^alertname=~"(.+)"$/.exec(m)
        if (re && !re[1]!.includes('.+'))
          for (const n of re[1]!.split('|')) assert.ok(names.has(n), `inhibition names unknown alert ${n}`)
      }
  })
})
