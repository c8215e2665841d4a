import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { skipUnlessPostgres } from './helpers/services.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'

for (const backend of ['embedded', 'postgres'] as const) {
  describe(`smoke on ${backend}`, {
    skip: backend === 'postgres' ? await skipUnlessPostgres() : false,
  }, () => {
    let plinth: TestPlinth
    before(async () => {
      plinth = await startTestPlinth({ backend })
    })
    after(() => plinth?.close())
    it('answers /api/v1', async () => {
      const res = await plinth.app.inject('/api/v1')
      assert.equal(res.statusCode, 200)
      assert.equal(res.json().name, 'plinth')
    })
  })
}
