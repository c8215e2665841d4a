import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { describe, it } from 'node:test'
import { documentedNames, renderApiReference } from '../scripts/api-reference.ts'
import * as plinth from '../src/index.ts'
import * as testing from '../src/testing/index.ts'

describe('public API reference (docs/reference/api.md)', () => {
  it('matches the exported declarations (npm run docs:generate rewrites it)', () => {
    assert.equal(
      readFileSync(new URL('../docs/reference/api.md', import.meta.url), 'utf8'),
      renderApiReference(),
      'docs/reference/api.md is stale: run npm run docs:generate',
    )
  })

  it('documents every value the entries export', () => {
    const documented = documentedNames()
    for (const [specifier, module] of [
      ['plinth', plinth],
      ['plinth/testing', testing],
    ] as const) {
      const missing = Object.keys(module).filter((name) => !documented[specifier]?.includes(name))
      assert.deepEqual(missing, [], `${specifier} exports undocumented names`)
    }
  })

  it('gives every declared name a doc comment or a declaration', () => {
    const text = renderApiReference()
    for (const name of ['defineModule', 'createTestPlinth', 'runPlinth', 'ModuleApi', 'PersonalDataTable'])
      assert.match(text, new RegExp(`#### \`${name}\``))
  })
})
