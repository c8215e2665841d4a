import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import { backupServiceOf } from '../src/modules/backups/backups.module.ts'
import { TEST_MASTER_KEY } from './helpers/test-config.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'

// plinth_backup_last_success_timestamp_seconds is the newest verified backup in the backup target,
// registered at boot and read from the target on a scrape: a replica that never made a backup
// reports the same fact as the one that did (PlinthBackupMissing / PlinthBackupTooOld read it).

const NAME = 'plinth_backup_last_success_timestamp_seconds'

async function lastSuccess(plinth: TestPlinth): Promise<{ help: boolean; values: Map<string, number> }> {
  const text = (await plinth.app.inject({ method: 'GET', url: '/api/metrics' })).body
  const values = new Map<string, number>()
  for (const m of text.matchAll(new RegExp(`^${NAME}\\{kind="(\\w+)"\\} (\\S+)$`, 'gm')))
    values.set(m[1]!, Number(m[2]))
  return { help: text.includes(`# HELP ${NAME} `), values }
}

describe('backup metrics registered at boot', () => {
  const dir = mkdtempSync(join(tmpdir(), 'plinth-backup-metrics-'))
  const env = { PLINTH_BACKUP_DIR: dir, PLINTH_MASTER_KEY: TEST_MASTER_KEY }
  const started: TestPlinth[] = []
  const start = async () => {
    const p = await startTestPlinth({ env })
    started.push(p)
    return p
  }
  after(async () => {
    for (const p of started) await p.close()
    rmSync(dir, { recursive: true, force: true })
  })

  it('reports the newest verified backup in the target on every replica, from its first scrape', async () => {
    const empty = await start()
    const none = await lastSuccess(empty)
    assert.ok(none.help, 'registered before any backup')
    assert.equal(none.values.size, 0, 'no value while the target holds no verified backup')

    const source = await start()
    const service = backupServiceOf(source.context)
    const verified = await service.create()
    assert.equal((await service.verify(verified.id)).ok, true)
    const verifiedAt = new Date(verified.manifest!.finishedAt).getTime() / 1000
    // A newer backup that was never verified does not count.
    const unverified = await service.create()

    // A fresh replica that never made (or built the service of) a backup.
    const replica = await start()
    assert.deepEqual((await lastSuccess(replica)).values, new Map([['embedded', verifiedAt]]))
    assert.deepEqual((await lastSuccess(source)).values, new Map([['embedded', verifiedAt]]))

    // Verifying in this process reads the target again at the next scrape.
    assert.equal((await service.verify(unverified.id)).ok, true)
    assert.deepEqual(
      (await lastSuccess(source)).values,
      new Map([['embedded', new Date(unverified.manifest!.finishedAt).getTime() / 1000]]),
    )
  })
})
