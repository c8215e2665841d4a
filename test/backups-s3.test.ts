import assert from 'node:assert/strict'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3'
import { sql } from 'kysely'
import { builtinModules } from '../src/app/modules.ts'
import { type BackupService, createBackupService } from '../src/modules/backups/backup.service.ts'
import { archiveName } from '../src/modules/backups/manifest.ts'
import { createS3Target } from '../src/modules/backups/s3-target.ts'
import { createUser, NO_RATE_LIMITS, uniqueEmail } from './helpers/accounts.ts'
import { type S3rver, startS3rver } from './helpers/s3rver.ts'
import { TEST_MASTER_KEY } from './helpers/test-config.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'

const BUCKET = 'backups'
const knownMigrations = builtinModules.flatMap((m) => Object.keys(m.migrations ?? {}))

describe('the S3 backup target, against a real s3rver process', () => {
  let plinth: TestPlinth
  let s3: S3rver
  const serviceFor = (endpoint: string) =>
    createBackupService({
      config: plinth.context.config,
      logger: plinth.context.logger,
      db: plinth.context.db,
      keyring: plinth.context.keyring,
      audit: plinth.context.audit,
      target: createS3Target({ ...s3.connection, prefix: 'plinth/', endpoint }),
      chunkSize: 64 * 1024,
    })
  let service: BackupService

  before(async () => {
    s3 = await startS3rver(BUCKET)
    plinth = await startTestPlinth({ env: { ...NO_RATE_LIMITS, PLINTH_MASTER_KEY: TEST_MASTER_KEY } })
    await createUser(plinth, uniqueEmail('admin'), 'admin')
    service = serviceFor(s3.endpoint)
  })
  after(async () => {
    await plinth?.close()
    await s3?.stop()
  })

  it('uploads (multipart), publishes after the checksum, lists, verifies and restores', async () => {
    // ~6 MB that does not compress, so that the archive needs more than one 8 MiB upload part.
    await sql`create table s3_filler as select decode(string_agg(md5(random()::text), ''), 'hex') as b from generate_series(1, 400000)`.execute(
      plinth.db.kysely,
    )
    const b = await service.create()
    assert.ok((b.manifest?.parts[0]?.bytes ?? 0) > 8 * 1024 * 1024, 'big enough for a multipart upload')
    assert.deepEqual(
      (await s3.keys()).sort(),
      [`plinth/${b.id}.archive`, `plinth/${b.id}.manifest.json`],
      'no temporary key is left',
    )
    assert.deepEqual(
      (await service.list()).map((x) => x.id),
      [b.id],
    )
    const v = await service.verify(b.id)
    assert.equal(v.ok, true, JSON.stringify(v.checks))
    assert.equal((await service.show(b.id)).status, 'verified')
    const target = join(s3.dir, 'restored')
    const r = await service.restore(b.id, { dataDir: target, force: false, knownMigrations })
    assert.equal(r.matches, true)
  })

  it('detects an archive altered in the bucket', async () => {
    const b = await service.create()
    const Key = `plinth/${archiveName(b.id)}`
    const got = await s3.client.send(new GetObjectCommand({ Bucket: BUCKET, Key }))
    const bytes = Buffer.from(await got.Body!.transformToByteArray())
    bytes[bytes.length >> 1]! ^= 1
    await s3.client.send(new PutObjectCommand({ Bucket: BUCKET, Key, Body: bytes }))
    const v = await service.verify(b.id)
    assert.equal(v.ok, false)
    assert.equal((await service.show(b.id)).status, 'failed')
  })

  it('an unreachable endpoint fails with PLINTH_BACKUP_TARGET_UNAVAILABLE and lists nothing half-written', async () => {
    const dead = serviceFor('http://127.0.0.1:9')
    await assert.rejects(dead.create(), { code: 'PLINTH_BACKUP_TARGET_UNAVAILABLE' })
    await assert.rejects(dead.list(), { code: 'PLINTH_BACKUP_TARGET_UNAVAILABLE' })
  })
})
