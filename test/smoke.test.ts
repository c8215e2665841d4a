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

describe('a Plinth that fails to build', () => {
  it('closes the embedded database and releases its data directory', async () => {
    const { mkdtempSync, existsSync, rmSync } = await import('node:fs')
    const { tmpdir } = await import('node:os')
    const { join } = await import('node:path')
    const { createPlinth } = await import('../src/app/create-plinth.ts')
    const { builtinModules } = await import('../src/app/modules.ts')
    const { testConfig } = await import('./helpers/test-config.ts')
    const dir = mkdtempSync(join(tmpdir(), 'plinth-failed-build-'))
    try {
      const config = testConfig({ PLINTH_DATA_DIR: dir })
      const undeclared = {
        name: 'undeclared',
        routes(api: { get: (url: string, handler: () => unknown) => unknown }) {
          api.get('/undeclared', () => ({}))
        },
      }
      await assert.rejects(
        createPlinth({ config, modules: [...builtinModules, undeclared as never] }),
        /declares neither config\.permission nor config\.public/,
      )
      assert.equal(existsSync(join(dir, 'plinth.lock')), false, 'the data-directory lock is released')
      const again = await createPlinth({ config })
      await again.shutdown()
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
