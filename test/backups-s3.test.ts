import assert from 'node:assert/strict'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3'
import { sql } from 'kysely'
import { builtinModules } from '../src/app/modules.ts'
import { type BackupService, createBackupService } from '../src/modules/backups/backup.service.ts'
import { backupServiceOf } from '../src/modules/backups/backups.module.ts'
import { archiveName } from '../src/modules/backups/manifest.ts'
import { createS3Target } from '../src/modules/backups/s3-target.ts'
import { createUser, NO_RATE_LIMITS, uniqueEmail } from './helpers/accounts.ts'
import { type S3rver, startS3rver } from './helpers/s3rver.ts'
import { startTcpProxy } from './helpers/tcp-proxy.ts'
import { TEST_MASTER_KEY } from './helpers/test-config.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'
import { waitFor } from './helpers/wait-for.ts'

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

  it("closes the configured target's connections (both S3 clients) when the instance closes", async () => {
    // Through a proxy that counts the connections. s3rver keeps an idle connection 5 s: without the
    // close, they outlive the instance that long.
    const proxy = await startTcpProxy({ host: '127.0.0.1', port: s3.port })
    let own: TestPlinth | undefined
    try {
      own = await startTestPlinth({
        env: {
          PLINTH_MASTER_KEY: TEST_MASTER_KEY,
          PLINTH_BACKUP_S3_BUCKET: BUCKET,
          PLINTH_BACKUP_S3_PREFIX: 'closing/',
          PLINTH_BACKUP_S3_ENDPOINT: proxy.through(s3.endpoint),
          PLINTH_BACKUP_S3_REGION: s3.connection.region,
          PLINTH_BACKUP_S3_ACCESS_KEY_ID: s3.connection.accessKeyId,
          PLINTH_BACKUP_S3_SECRET_ACCESS_KEY: s3.connection.secretAccessKey,
          PLINTH_BACKUP_S3_FORCE_PATH_STYLE: 'true',
        },
      })
      const target = backupServiceOf(own.context).target
      await target.writeText('probe.json', '{"probe":true}')
      // A streamed read goes through the second client (no idle timeout).
      let text = ''
      for await (const chunk of await target.open('probe.json')) text += chunk
      assert.equal(text, '{"probe":true}')
      await target.remove('probe.json')
      assert.ok(proxy.connections >= 1, 'the calls left keep-alive connections open')
      await own.close()
      own = undefined
      await waitFor('every connection to the bucket closed', () => proxy.connections === 0, {
        timeoutMs: 2_500,
      })
    } finally {
      await own?.close()
      await proxy.close()
    }
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
