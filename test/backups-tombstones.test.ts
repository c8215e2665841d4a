import assert from 'node:assert/strict'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { sql } from 'kysely'
import { pseudonymFor } from '../src/core/privacy.ts'
import { backupServiceOf, readTombstones, tombstonesOf } from '../src/modules/backups/backups.module.ts'
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

  it('rebuilds the tombstones from the audit log: an entry a racing writer dropped comes back, none is lost', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'plinth-tombstones-race-'))
    const env = {
      ...NO_RATE_LIMITS,
      PLINTH_BACKUP_DIR: dir,
      PLINTH_MASTER_KEY: TEST_MASTER_KEY,
      PLINTH_SECRET_KEY: 'tombstone-test-secret-key-of-enough-length-0123456789',
    }
    const plinth = await startTestPlinth({ backend: 'postgres', env })
    try {
      const erase = async () => {
        const email = uniqueEmail('erased')
        await createUser(plinth, email, 'member')
        const user = (await plinth.context.users.list({ email, limit: 1, offset: 0 }))[0]!
        return (await createPrivacyService(plinth.context).erase(user.id, { via: 'cli' })).pseudonym
      }
      const a = await erase()
      const b = await erase()
      const file = join(dir, 'tombstones.json')
      const pseudonymsInFile = () =>
        (JSON.parse(readFileSync(file, 'utf8')).erasures as { pseudonym: string }[]).map((t) => t.pseudonym)
      await waitFor('both tombstones', () => pseudonymsInFile().length === 2)

      const target = backupServiceOf(plinth.context).target
      // A writer that read the file before b's tombstone was added, and wrote after: b is dropped.
      writeFileSync(
        file,
        JSON.stringify({
          format: 1,
          erasures: [
            { pseudonym: a, at: new Date().toISOString() },
            { pseudonym: 'pruned-from-the-audit-log', at: '2019-01-01T00:00:00.000Z' },
          ],
        }),
      )
      assert.ok(!pseudonymsInFile().includes(b))

      // The sync (at start, after each erasure, before each backup and restore) rebuilds from the
      // audit log, which every writer shares: b is back; what the file knew alone is kept.
      const all = await tombstonesOf(plinth.context).sync()
      assert.deepEqual(new Set(all.map((t) => t.pseudonym)), new Set([a, b, 'pruned-from-the-audit-log']))
      assert.deepEqual(new Set(pseudonymsInFile()), new Set([a, b, 'pruned-from-the-audit-log']))
      assert.deepEqual(
        (await readTombstones(target)).map((t) => t.at),
        all.map((t) => t.at).sort(),
        'oldest first',
      )
      const { rows } = await sql<{ n: number }>`
        select count(distinct target_id)::int as n from audit_log where action = 'user:erased' and outcome = 'success'`.execute(
        plinth.db.kysely,
      )
      assert.equal(rows[0]!.n, 2)
      // Idempotent: nothing new, nothing rewritten.
      const before = readFileSync(file, 'utf8')
      await tombstonesOf(plinth.context).sync()
      assert.equal(readFileSync(file, 'utf8'), before)

      // The erasure after the race syncs too: the file is complete whoever wrote last.
      writeFileSync(file, JSON.stringify({ format: 1, erasures: [] }))
      const c = await erase()
      await waitFor('every erasure back in the file', () => new Set(pseudonymsInFile()).size === 3)
      assert.deepEqual(new Set(pseudonymsInFile()), new Set([a, b, c]))
    } finally {
      await plinth.close()
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
