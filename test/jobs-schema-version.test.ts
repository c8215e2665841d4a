import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { after, describe, it } from 'node:test'
import { sql } from 'kysely'
import { createPlinth } from '../src/app/create-plinth.ts'
import { PG_BOSS_SCHEMA_VERSION } from '../src/modules/jobs/job-store.ts'
import { skipUnlessPostgres } from './helpers/services.ts'
import { testConfig } from './helpers/test-config.ts'
import { createTestDatabase, type TestDatabase } from './helpers/test-database.ts'

const skip = await skipUnlessPostgres()

describe("the job store's pg-boss schema check", () => {
  it('is written for the schema of the pg-boss release that npm ci installs', () => {
    const pkg = JSON.parse(
      readFileSync(new URL('../node_modules/pg-boss/package.json', import.meta.url), 'utf8'),
    ) as {
      pgboss: { schema: number }
    }
    assert.equal(PG_BOSS_SCHEMA_VERSION, pkg.pgboss.schema)
  })

  describe('on PostgreSQL', { skip }, () => {
    let db: TestDatabase | undefined
    after(async () => {
      await db?.drop()
    })

    it('stops the boot, naming both versions, when the installed pg-boss schema is another version', async () => {
      db = await createTestDatabase()
      const config = testConfig({ DATABASE_URL: db.url })
      const first = await createPlinth({ config })
      try {
        await first.prepare()
        assert.equal(first.jobs.running, true)
        // As if a replica on a newer pg-boss release had migrated the engine's schema.
        await sql`update plinth_jobs.version set version = ${PG_BOSS_SCHEMA_VERSION + 1}`.execute(
          first.db.kysely,
        )
      } finally {
        await first.shutdown()
      }

      const second = await createPlinth({ config })
      try {
        await assert.rejects(second.prepare(), (err: Error) => {
          assert.match(err.message, new RegExp(`pg-boss schema version ${PG_BOSS_SCHEMA_VERSION + 1}\\b`))
          assert.match(err.message, new RegExp(`written for version ${PG_BOSS_SCHEMA_VERSION}\\b`))
          assert.match(err.message, /job-store\.ts/)
          return true
        })
        assert.equal(second.jobs.running, false, 'no job engine runs on a schema it cannot read')
      } finally {
        await second.shutdown()
      }
    })
  })
})
