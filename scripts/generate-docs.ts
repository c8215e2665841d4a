// Regenerates the reference docs that are derived from code. `--check` exits 1 when they are stale.
import { readFileSync, writeFileSync } from 'node:fs'
import { renderCliDocs, withCliBlock } from '../src/cli/cli-spec.ts'
import { commands } from '../src/cli/commands.ts'
import { renderConfigDocs } from '../src/config/config-docs.ts'
import { renderErrorDocs } from '../src/shared/error-docs.ts'
import { metricsDocument } from './metrics-document.ts'

const files: Record<string, string> = {
  'docs/configuration.md': renderConfigDocs(),
  'docs/errors.md': renderErrorDocs(),
  'docs/cli.md': renderCliDocs(commands),
  'docs/operations/metrics.md': await metricsDocument(),
  // The README's CLI block, between its markers.
  'README.md': withCliBlock(readFileSync('README.md', 'utf8'), commands),
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
