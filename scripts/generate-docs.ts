// Regenerates the reference docs that are derived from code. `--check` exits 1 when they are stale.
import { readFileSync, writeFileSync } from 'node:fs'
import { renderCliDocs, withCliBlock } from '../src/cli/cli-spec.ts'
import { commands } from '../src/cli/commands.ts'
import { renderConfigDocs } from '../src/config/config-docs.ts'
import { renderErrorDocs } from '../src/shared/error-docs.ts'
import { renderApiReference } from './api-reference.ts'
import { PROMETHEUS_RULE, renderPrometheusRule } from './generate-prometheus-rule.ts'
import { metricsDocument } from './metrics-document.ts'

const files: Record<string, string> = {
  'docs/configuration.md': renderConfigDocs(),
  'docs/errors.md': renderErrorDocs(),
  'docs/cli.md': renderCliDocs(commands),
  'docs/operations/metrics.md': await metricsDocument(),
  // The README's CLI block, between its markers.
  'README.md': withCliBlock(readFileSync('README.md', 'utf8'), commands),
  // The public API (`plinth`, `plinth/testing`), from src/index.ts and src/testing/index.ts.
  'docs/reference/api.md': renderApiReference(),
  // The Kubernetes PrometheusRule, from deploy/prometheus/rules/*.yml.
  [PROMETHEUS_RULE]: renderPrometheusRule(process.cwd()),
}
const check = process.argv.includes('--check')
let stale = 0
for (const [path, content] of Object.entries(files)) {
  let current = ''
  try {
    current = readFileSync(path, 'utf8')
  } catch {}
  if (current === content) continue
  stale++
  if (check) console.error(`${path} is stale: run npm run docs:generate`)
  else {
    writeFileSync(path, content)
    console.log(`wrote ${path}`)
  }
}
process.exit(check && stale > 0 ? 1 : 0)
