import assert from 'node:assert/strict'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { sql } from 'kysely'
import { pseudonymFor } from '../src/core/privacy.ts'
import { backupServiceOf } from '../src/modules/backups/backups.module.ts'
import { connectTo } from '../src/modules/backups/pg-dump-engine.ts'
import { createPrivacyService } from '../src/modules/privacy/privacy.service.ts'
import { createUser, NO_RATE_LIMITS, uniqueEmail } from './helpers/accounts.ts'
import { runCliWithEnv as cli } from './helpers/run-cli.ts'
import { skipUnlessPostgres } from './helpers/services.ts'
import { TEST_MASTER_KEY } from './helpers/test-config.ts'
import { createTestDatabase } from './helpers/test-database.ts'
import { startTestPlinth } from './helpers/test-plinth.ts'
import { waitFor } from './helpers/wait-for.ts'

const skip = await skipUnlessPostgres()

describe('erasure tombstones: a restore never brings an erased person back', { skip }, () => {
  it('records each erasure in the backup target and erases the person again after restoring an older backup', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'plinth-tombstones-'))
    const env = {
      ...NO_RATE_LIMITS,
      PLINTH_BACKUP_DIR: dir,
      PLINTH_MASTER_KEY: TEST_MASTER_KEY,
      PLINTH_SECRET_KEY: 'tombstone-test-secret-key-of-enough-length-0123456789',
    }
    const source = await startTestPlinth({ backend: 'postgres', env })
    const empty = await createTestDatabase()
    try {
      await createUser(source, uniqueEmail('admin'), 'admin')
      const goneEmail = uniqueEmail('gone')
      const keptEmail = uniqueEmail('kept')
      await createUser(source, goneEmail, 'member')
      await createUser(source, keptEmail, 'member')
      const gone = (await source.context.users.list({ email: goneEmail, limit: 1, offset: 0 }))[0]!

      // The backup holds the person; the erasure comes after it.
      const backup = await backupServiceOf(source.context).create()
      const report = await createPrivacyService(source.context).erase(gone.id, { via: 'cli' })
      assert.equal(report.pseudonym, pseudonymFor(gone.id, env.PLINTH_SECRET_KEY))
      const file = await waitFor('the tombstone', () => {
        try {
          const t = JSON.parse(readFileSync(join(dir, 'tombstones.json'), 'utf8'))
          return t.erasures.length > 0 ? t : false
        } catch {
          return false
        }
      })
      assert.deepEqual(
        Object.keys(file.erasures[0]).sort(),
        ['at', 'pseudonym'],
        'a pseudonym and a time, nothing else',
      )
      assert.equal(file.erasures[0].pseudonym, report.pseudonym)
      assert.doesNotMatch(JSON.stringify(file), new RegExp(`${gone.id}|${goneEmail}`))

      const r = await cli(['backup', 'restore', backup.id, '--target', empty.url, '--json'], {
        ...env,
        DATABASE_URL: source.config.databaseUrl!,
        PLINTH_ENV: 'test',
        PLINTH_LOG_LEVEL: 'silent',
      })
      assert.equal(r.code, 0, r.err)
      const result = JSON.parse(r.out)
      assert.equal(result.matches, true, 'the backup itself restored as it was')
      assert.equal(result.erasuresReapplied, 1)
      const again = await cli(['backup', 'reapply-erasures', '--target', empty.url, '--json'], {
        ...env,
        DATABASE_URL: source.config.databaseUrl!,
        PLINTH_ENV: 'test',
        PLINTH_LOG_LEVEL: 'silent',
      })
      assert.equal(again.code, 0, again.err)
      assert.equal(JSON.parse(again.out).erasuresReapplied, 0, 'nobody left to erase: idempotent')

      const conn = connectTo(empty.url)
      try {
        const { rows } = await sql<{ email: string }>`select email from users order by email`.execute(
          conn.kysely,
        )
        const emails = rows.map((x) => x.email)
        assert.ok(!emails.includes(goneEmail), 'the erased person is gone from the restored database')
        assert.ok(emails.includes(keptEmail))
        const { rows: audit } = await sql<{ n: number }>`
          select count(*)::int as n from audit_log where action = 'user:erased' and target_id = ${report.pseudonym}`.execute(
          conn.kysely,
        )
        assert.equal(audit[0]!.n, 1, 'the re-applied erasure is audited in the restored database')
      } finally {
        await conn.close()
      }
    } finally {
      await source.close()
      await empty.drop()
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
