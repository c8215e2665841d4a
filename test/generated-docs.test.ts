import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { describe, it } from 'node:test'
import { metricsDocument } from '../scripts/metrics-document.ts'
import { README_CLI_BEGIN, renderCliDocs, withCliBlock } from '../src/cli/cli-spec.ts'
import { commands } from '../src/cli/commands.ts'
import { configSchema } from '../src/config/config.schema.ts'
import { renderConfigDocs } from '../src/config/config-docs.ts'
import { renderErrorDocs } from '../src/shared/error-docs.ts'
import { errorRegistry } from '../src/shared/errors.ts'

const fix = 'run `npm run docs:generate` and commit the result'

describe('generated reference docs', () => {
  it('docs/configuration.md matches the config schema', () => {
    assert.equal(
      readFileSync('docs/configuration.md', 'utf8'),
      renderConfigDocs(),
      `docs/configuration.md is stale: ${fix}`,
    )
  })

  it('docs/errors.md matches the error registry', () => {
    assert.equal(readFileSync('docs/errors.md', 'utf8'), renderErrorDocs(), `docs/errors.md is stale: ${fix}`)
  })

  it("docs/cli.md and the README's CLI block match the CLI declaration", () => {
    assert.equal(readFileSync('docs/cli.md', 'utf8'), renderCliDocs(commands), `docs/cli.md is stale: ${fix}`)
    const readme = readFileSync('README.md', 'utf8')
    assert.ok(readme.includes(README_CLI_BEGIN), 'README.md lost its CLI block markers')
    assert.equal(readme, withCliBlock(readme, commands), `README.md's CLI block is stale: ${fix}`)
    for (const c of commands)
      assert.ok(readme.includes(`plinth ${c.name}`), `README.md does not show plinth ${c.name}`)
  })

  it('docs/operations/metrics.md matches the metrics registry', async () => {
    const page = await metricsDocument()
    assert.equal(
      readFileSync('docs/operations/metrics.md', 'utf8'),
      page,
      `docs/operations/metrics.md is stale: ${fix}`,
    )
    for (const name of [
      'plinth_users_registered_total',
      'plinth_sessions_active',
      'plinth_jobs_completed_total',
    ])
      assert.ok(page.includes(`| \`${name}\``), `${name} is not documented`)
  })

  it('documents every configuration key and every error code', () => {
    const config = renderConfigDocs()
    for (const key of Object.values(configSchema)) assert.ok(config.includes(`\`${key.env}\``), key.env)
    const errors = renderErrorDocs()
    for (const code of Object.keys(errorRegistry)) assert.ok(errors.includes(`\`${code}\``), code)
  })

  it('gives every key a doc and every code a fix', () => {
    for (const key of Object.values(configSchema)) assert.ok(key.doc.length > 20, `${key.env} needs a doc`)
    for (const [code, e] of Object.entries(errorRegistry)) {
      assert.match(code, /^PLINTH_[A-Z]+(_[A-Z]+)*$/)
      assert.ok(e.status >= 400 && e.status < 600, code)
      assert.ok(e.detail.length > 20, `${code} needs a detail`)
    }
  })
})
