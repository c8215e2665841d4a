import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { sql } from 'kysely'
import { builtinModules } from '../src/app/modules.ts'
import { createBackupService } from '../src/modules/backups/backup.service.ts'
import { listTables } from '../src/modules/backups/database-facts.ts'
import { createLocalTarget } from '../src/modules/backups/local-target.ts'
import { connectTo } from '../src/modules/backups/pg-dump-engine.ts'
import { createS3Target } from '../src/modules/backups/s3-target.ts'
import { createUser, NO_RATE_LIMITS, uniqueEmail } from './helpers/accounts.ts'
import { type S3rver, startS3rver } from './helpers/s3rver.ts'
import { skipUnlessPostgres } from './helpers/services.ts'
import { startTcpProxy, type TcpProxy } from './helpers/tcp-proxy.ts'
import { TEST_MASTER_KEY } from './helpers/test-config.ts'
import { createTestDatabase } from './helpers/test-database.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'
import { waitFor } from './helpers/wait-for.ts'

const BUCKET = 'backups'
const knownMigrations = builtinModules.flatMap((m) => Object.keys(m.migrations ?? {}))

/** Incompressible rows (random bytes), so that the archive is as big as the data. */
async function filler(plinth: TestPlinth, table: string, megabytes: number) {
  await sql`create table ${sql.table(table)} as select decode(string_agg(md5(random()::text), ''), 'hex') as b from generate_series(1, ${Math.round(megabytes * 65536)}::int)`.execute(
    plinth.db.kysely,
  )
}

function canMount(): false | string {
  if (process.getuid?.() !== 0) return 'a size-limited tmpfs needs root (mount -t tmpfs)'
  return false
}

describe('a full disk mid-backup', { skip: canMount() }, () => {
  let plinth: TestPlinth
  let mountPoint: string

  before(async () => {
    mountPoint = mkdtempSync(join(tmpdir(), 'plinth-full-'))
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=3m', 'tmpfs', mountPoint])
    plinth = await startTestPlinth({ env: { ...NO_RATE_LIMITS, PLINTH_MASTER_KEY: TEST_MASTER_KEY } })
    await createUser(plinth, uniqueEmail('admin'), 'admin')
  })
  after(async () => {
    await plinth?.close()
    if (mountPoint) {
      execFileSync('umount', [mountPoint])
      rmSync(mountPoint, { recursive: true, force: true })
    }
  })

  it('fails with PLINTH_BACKUP_TARGET_FULL, leaves nothing behind, and the next backup (with room) succeeds', async () => {
    const target = join(mountPoint, 'backups')
    mkdirSync(target)
    const service = createBackupService({
      config: plinth.context.config,
      logger: plinth.context.logger,
      db: plinth.context.db,
      keyring: plinth.context.keyring,
      audit: plinth.context.audit,
      target: createLocalTarget(target),
      chunkSize: 64 * 1024,
    })
    await filler(plinth, 'big_filler', 6) // an archive of > 6 MB on a 3 MB filesystem
    await assert.rejects(service.create(), (err: { code?: string; message: string }) => {
      assert.equal(err.code, 'PLINTH_BACKUP_TARGET_FULL', err.message)
      return true
    })
    assert.deepEqual(await service.list(), [], 'nothing half-written is listed')
    assert.deepEqual(readdirSync(target), [], 'the temporary archive was removed')

    // The operator makes room (here: the filesystem grows), and the next backup goes through.
    execFileSync('mount', ['-o', 'remount,size=256m', mountPoint])
    const next = await service.create()
    assert.equal((await service.verify(next.id)).ok, true)
    assert.deepEqual(
      (await service.list()).map((b) => b.id),
      [next.id],
    )
  })
})

describe('the S3 connection cut mid-upload', () => {
  let plinth: TestPlinth
  let s3: S3rver
  let proxy: TcpProxy

  before(async () => {
    s3 = await startS3rver(BUCKET)
    proxy = await startTcpProxy({ host: '127.0.0.1', port: s3.port })
    plinth = await startTestPlinth({ env: { ...NO_RATE_LIMITS, PLINTH_MASTER_KEY: TEST_MASTER_KEY } })
    await createUser(plinth, uniqueEmail('admin'), 'admin')
  })
  after(async () => {
    await plinth?.close()
    await proxy?.close()
    await s3?.stop()
  })

  it('fails cleanly with PLINTH_BACKUP_TARGET_UNAVAILABLE, publishes nothing, and the next backup succeeds', async () => {
    const service = createBackupService({
      config: plinth.context.config,
      logger: plinth.context.logger,
      db: plinth.context.db,
      keyring: plinth.context.keyring,
      audit: plinth.context.audit,
      target: createS3Target({ ...s3.connection, prefix: 'plinth/', endpoint: proxy.through(s3.endpoint) }),
      chunkSize: 64 * 1024,
    })
    await filler(plinth, 's3_cut_filler', 20) // several 8 MiB parts
    const creating = service.create()
    // The upload is under way (a connection to the bucket is open): cut the network.
    await waitFor('the upload to start', () => proxy.connections > 0, { timeoutMs: 60_000, intervalMs: 5 })
    proxy.cut()
    await assert.rejects(creating, (err: { code?: string; message: string }) => {
      assert.equal(err.code, 'PLINTH_BACKUP_TARGET_UNAVAILABLE', err.message)
      return true
    })
    proxy.restore()

    assert.deepEqual(
      (await s3.keys()).filter((k) => k.endsWith('.manifest.json') || k.endsWith('.archive')),
      [],
      'no archive or manifest was published',
    )
    assert.deepEqual(await service.list(), [])

    await sql`drop table s3_cut_filler`.execute(plinth.db.kysely)
    const next = await service.create()
    assert.equal((await service.verify(next.id)).ok, true)
    assert.deepEqual(
      (await service.list()).map((b) => b.id),
      [next.id],
    )
  })
})

describe('a server restore from a damaged archive (one pass, one transaction)', {
  skip: await skipUnlessPostgres(),
}, () => {
  it('fails with PLINTH_BACKUP_CORRUPT and leaves the target empty, wherever the damage is', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'plinth-damaged-restore-'))
    const plinth = await startTestPlinth({
      backend: 'postgres',
      env: { ...NO_RATE_LIMITS, PLINTH_MASTER_KEY: TEST_MASTER_KEY, PLINTH_BACKUP_DIR: dir },
    })
    const empty = await createTestDatabase()
    try {
      await createUser(plinth, uniqueEmail('admin'), 'admin')
      await filler(plinth, 'restore_filler', 3)
      const service = createBackupService({
        config: plinth.context.config,
        logger: plinth.context.logger,
        db: plinth.context.db,
        keyring: plinth.context.keyring,
        audit: plinth.context.audit,
        target: createLocalTarget(dir),
        chunkSize: 64 * 1024,
      })
      const b = await service.create()
      const archive = join(dir, b.manifest!.parts[0]!.name)
      const good = readFileSync(archive)
      for (const at of [good.length >> 1, good.length - 20]) {
        const bad = Buffer.from(good)
        bad[at]! ^= 0x01
        writeFileSync(archive, bad)
        await assert.rejects(
          service.restore(b.id, { databaseUrl: empty.url, force: false, knownMigrations }),
          (err: { code?: string }) => err.code === 'PLINTH_BACKUP_CORRUPT',
        )
        const conn = connectTo(empty.url)
        try {
          assert.deepEqual(await listTables(conn.kysely), [], `damage at byte ${at} left tables behind`)
        } finally {
          await conn.close()
        }
      }
      writeFileSync(archive, good)
      const r = await service.restore(b.id, { databaseUrl: empty.url, force: false, knownMigrations })
      assert.equal(r.matches, true)
    } finally {
      await plinth.close()
      await empty.drop()
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
