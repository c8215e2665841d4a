import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { it } from 'node:test'
import { generateSchema, SCHEMA_FILE } from '../scripts/generate.ts'

it('src/schema.d.ts is the one generated from the current OpenAPI document', async () => {
  const committed = readFileSync(SCHEMA_FILE, 'utf8')
  const fresh = await generateSchema()
  assert.ok(
    committed === fresh,
    'packages/client/src/schema.d.ts is stale: run `npm run generate -w @plinth/client` and commit it',
  )
})
