import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { backupServiceOf } from '../src/modules/backups/backups.module.ts'
import { createUser, NO_RATE_LIMITS, uniqueEmail } from './helpers/accounts.ts'
import { filesUnder, uploadOne } from './helpers/files-kit.ts'
import { runCliWithEnv as cli } from './helpers/run-cli.ts'
import { skipUnlessPostgres } from './helpers/services.ts'
import { TEST_MASTER_KEY } from './helpers/test-config.ts'
import { createTestDatabase } from './helpers/test-database.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'

const skip = await skipUnlessPostgres()
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex')

/**
 * Backups include the directories modules declare (`backupPaths`): here the files module's local
 * storage. The manifest lists every file (path, size, SHA-256), verification checks each, a damaged
 * byte fails it, and a restore puts the files back where the restoring instance keeps them.
 */
describe('backups include the files on local disk', { skip }, () => {
  let plinth: TestPlinth
  let dir: string
  let env: Record<string, string>

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'plinth-backup-files-'))
    env = {
      ...NO_RATE_LIMITS,
      PLINTH_BACKUP_DIR: join(dir, 'backups'),
      PLINTH_FILES_DIR: join(dir, 'files'),
      PLINTH_MASTER_KEY: TEST_MASTER_KEY,
    }
    plinth = await startTestPlinth({ backend: 'postgres', env })
  })
  after(async () => {
    await plinth?.close()
    rmSync(dir, { recursive: true, force: true })
  })

  it('lists, verifies and restores every file; a damaged file fails verification', async () => {
    assert.deepEqual(
      plinth.context.backupPaths.map((p) => [p.module, p.name, p.path]),
      [['files', 'files', join(dir, 'files')]],
    )
    const user = await createUser(plinth, uniqueEmail('uploader'), 'member')
    const contents = [Buffer.from('first file\n'), Buffer.alloc(300_000, 7), Buffer.from('third')]
    for (const [i, c] of contents.entries()) await uploadOne(plinth, user, `f${i}.bin`, c)
    const onDisk = filesUnder(join(dir, 'files')).filter((p) => !p.startsWith('.'))
    assert.ok(onDisk.length >= 2, onDisk.join(', '))

    const service = backupServiceOf(plinth.context)
    const backup = await service.create()
    const files = backup.manifest!.files!
    assert.equal(files.name, `${backup.id}.files.archive`)
    assert.equal(files.roots.length, 1)
    assert.equal(files.roots[0]!.root, 'files/files')
    const listed = new Map(files.roots[0]!.files.map((f) => [f.path, f]))
    for (const path of onDisk) {
      const bytes = readFileSync(join(dir, 'files', path))
      assert.equal(listed.get(path)?.size, bytes.length, path)
      assert.equal(listed.get(path)?.sha256, sha(bytes), path)
    }
    assert.equal(listed.size, onDisk.length)
    const verified = await service.verify(backup.id)
    assert.equal(verified.ok, true, JSON.stringify(verified.checks))
    assert.match(
      verified.checks.find((c) => c.name === 'files')!.detail,
      new RegExp(`^${onDisk.length} file`),
    )

    // Restore elsewhere (a new database, a new files directory): the files come back byte for byte.
    const empty = await createTestDatabase()
    const restoredFiles = join(dir, 'restored-files')
    try {
      const r = await cli(['backup', 'restore', backup.id, '--target', empty.url, '--json'], {
        ...env,
        PLINTH_FILES_DIR: restoredFiles,
        DATABASE_URL: plinth.config.databaseUrl!,
        PLINTH_ENV: 'test',
        PLINTH_LOG_LEVEL: 'silent',
      })
      assert.equal(r.code, 0, r.err)
      assert.equal(JSON.parse(r.out).filesRestored, onDisk.length)
      assert.deepEqual(filesUnder(restoredFiles).sort(), [...onDisk].sort())
      for (const path of onDisk)
        assert.ok(
          readFileSync(join(restoredFiles, path)).equals(readFileSync(join(dir, 'files', path))),
          path,
        )
    } finally {
      await empty.drop()
    }

    // One flipped byte in the files part: verification fails and names the check.
    const archive = join(dir, 'backups', files.name)
    const bytes = readFileSync(archive)
    bytes[Math.floor(bytes.length / 2)]! ^= 0xff
    writeFileSync(archive, bytes)
    const damaged = await service.verify(backup.id)
    assert.equal(damaged.ok, false)
    assert.equal((await service.show(backup.id)).status, 'failed')
  })
})
