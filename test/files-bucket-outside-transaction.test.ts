import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { sql } from 'kysely'
import { sweepFiles } from '../src/modules/files/sweep.ts'
import { bearer, createUser, NO_RATE_LIMITS, type Session, uniqueEmail } from './helpers/accounts.ts'
import { assertProblem } from './helpers/assert-problem.ts'
import { upload, uploadOne } from './helpers/files-kit.ts'
import { type S3rver, startS3rver } from './helpers/s3rver.ts'
import { skipUnlessPostgres } from './helpers/services.ts'
import { startTcpProxy, type TcpProxy } from './helpers/tcp-proxy.ts'
import { type Backend, startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'
import { waitFor } from './helpers/wait-for.ts'

/**
 * An upload writes its bytes to the bucket outside any database transaction: a bucket that does not
 * answer (up to the S3 timeouts, ~90 s) must not hold a transaction, the owner's lock, or — on the
 * embedded database, one session for everyone — every other query.
 */
for (const backend of ['embedded', 'postgres'] as Backend[]) {
  describe(`uploads to a silent bucket on ${backend}`, {
    skip: backend === 'postgres' ? await skipUnlessPostgres() : false,
    timeout: 180_000,
  }, () => {
    let s3: S3rver
    let proxy: TcpProxy
    let plinth: TestPlinth
    let alice: Session
    before(async () => {
      s3 = await startS3rver('files')
      proxy = await startTcpProxy({ host: '127.0.0.1', port: s3.port })
      plinth = await startTestPlinth({
        backend,
        env: {
          ...NO_RATE_LIMITS,
          PLINTH_RATE_LIMIT_UPLOAD: '0',
          PLINTH_FILES_S3_BUCKET: s3.bucket,
          PLINTH_FILES_S3_ENDPOINT: proxy.through(s3.endpoint),
          PLINTH_FILES_S3_FORCE_PATH_STYLE: 'true',
          PLINTH_FILES_S3_ACCESS_KEY_ID: s3.connection.accessKeyId,
          PLINTH_FILES_S3_SECRET_ACCESS_KEY: s3.connection.secretAccessKey,
          PLINTH_S3_CONNECT_TIMEOUT: '500ms',
        },
      })
      alice = await createUser(plinth, uniqueEmail('alice'), 'member')
      // The storage opens (and the S3 client loads) at the first upload.
      await uploadOne(plinth, alice, 'warm.txt', Buffer.from('opens the storage'))
    })
    after(async () => {
      proxy?.restore()
      await plinth?.close()
      await proxy?.close()
      await s3?.stop()
    })
    const reservations = () =>
      plinth.db.kysely.selectFrom('file_uploads').selectAll().where('owner', '=', alice.userId).execute()
    const rowsNamed = (name: string) =>
      plinth.db.kysely
        .selectFrom('files')
        .select('id')
        .where('owner', '=', alice.userId)
        .where('name', '=', name)
        .execute()

    it('keeps the database free while the bucket is silent, and records the file once it answers', async () => {
      proxy.setMode('half-open')
      const pending = upload(plinth, alice, [
        { name: 'file', filename: 'slow.txt', content: Buffer.from('held up by a silent bucket') },
      ])
      await waitFor('the upload to reserve its key', async () => (await reservations()).length === 1)
      // Another transaction of this owner's (the lock every upload takes) and a read of their files
      // complete while the upload waits on the bucket; before, they waited for it.
      const free = (async () => {
        await plinth.db.kysely.transaction().execute(async (trx) => {
          await sql`select pg_advisory_xact_lock(hashtext(${`plinth.files:${alice.userId}`}))`.execute(trx)
        })
        const list = await plinth.app.inject({ url: '/api/v1/files', headers: bearer(alice.token) })
        assert.equal(list.statusCode, 200, list.body)
        // Not visible before it is recorded.
        assert.ok(!list.json().files.some((f: { name: string }) => f.name === 'slow.txt'))
        return 'database' as const
      })()
      assert.equal(await Promise.race([free, pending.then(() => 'upload' as const)]), 'database')
      if (backend === 'postgres') {
        const { rows } = await sql<{ n: number }>`select count(*)::int as n from pg_stat_activity
          where datname = current_database() and state like 'idle in transaction%'`.execute(plinth.db.kysely)
        assert.equal(rows[0]!.n, 0, 'no transaction is open while the bucket is silent')
      }
      proxy.restore()
      const res = await pending
      assert.equal(res.statusCode, 201, res.body)
      assert.equal((await rowsNamed('slow.txt')).length, 1)
      assert.deepEqual(await reservations(), [])
      assert.ok((await s3.keys()).some((k) => k.endsWith(res.json().files[0].sha256)))
    })

    it('leaves nothing behind when the bucket fails the write: no row, no reservation, no object', async () => {
      const content = Buffer.from('refused by a bucket that went away')
      proxy.cut()
      try {
        const res = await upload(plinth, alice, [{ name: 'file', filename: 'lost.txt', content }])
        assertProblem(res, 503, 'PLINTH_FILES_STORAGE_UNAVAILABLE')
      } finally {
        proxy.restore()
      }
      assert.deepEqual(await rowsNamed('lost.txt'), [])
      assert.deepEqual(await reservations(), [])
      // The same bytes upload normally afterwards.
      const again = await uploadOne(plinth, alice, 'lost.txt', content)
      assert.equal((await rowsNamed('lost.txt')).length, 1)
      assert.ok((await s3.keys()).some((k) => k.endsWith(again.sha256)))
    })

    const remove = (id: string) =>
      plinth.app.inject({ method: 'DELETE', url: `/api/v1/files/${id}`, headers: bearer(alice.token) })
    const stored = async (sha256: string) => (await s3.keys()).some((k) => k.endsWith(sha256))

    it('deletes a file without holding the database while the bucket is silent; an upload of the same bytes waits for them to go, then stores them again', async () => {
      const content = Buffer.from('deleted while the bucket is silent')
      const file = await uploadOne(plinth, alice, 'gone.txt', content)
      proxy.setMode('half-open')
      const deleting = remove(file.id)
      // The row goes at once (committed) and the key is held while the bytes are being deleted;
      // before, the row was deleted in a transaction that waited on the bucket.
      await waitFor(
        'the row to go and the key to be held',
        async () => (await rowsNamed('gone.txt')).length === 0 && (await reservations()).length === 1,
      )
      await plinth.db.kysely.transaction().execute(async (trx) => {
        await sql`select pg_advisory_xact_lock(hashtext(${`plinth.files:${alice.userId}`}))`.execute(trx)
      })
      if (backend === 'postgres') {
        const { rows } = await sql<{ n: number }>`select count(*)::int as n from pg_stat_activity
          where datname = current_database() and state like 'idle in transaction%'`.execute(plinth.db.kysely)
        assert.equal(rows[0]!.n, 0, 'no transaction is open while the bucket is silent')
      }
      // The same bytes again: the upload waits for the delete to give the key back.
      const again = upload(plinth, alice, [{ name: 'file', filename: 'gone.txt', content }])
      const waited = await Promise.race([
        again.then(() => 'upload' as const),
        new Promise<'waiting'>((resolve) => setTimeout(resolve, 300, 'waiting')),
      ])
      assert.equal(waited, 'waiting', 'the upload of the same bytes waits while the delete holds the key')
      proxy.restore()
      assert.equal((await deleting).statusCode, 204)
      const res = await again
      assert.equal(res.statusCode, 201, res.body)
      assert.notEqual(res.json().files[0].id, file.id)
      assert.equal((await rowsNamed('gone.txt')).length, 1)
      assert.deepEqual(await reservations(), [])
      assert.ok(await stored(file.sha256), 'the new row has its bytes')
    })

    it('deletes a file when the bucket fails the delete: the row goes, the bytes stay for the sweep', async () => {
      const file = await uploadOne(
        plinth,
        alice,
        'stays.txt',
        Buffer.from('bytes the bucket would not delete'),
      )
      proxy.cut()
      try {
        assert.equal((await remove(file.id)).statusCode, 204)
      } finally {
        proxy.restore()
      }
      assert.deepEqual(await rowsNamed('stays.txt'), [])
      assert.deepEqual(await reservations(), [])
      assert.ok(await stored(file.sha256), 'the bytes are still there')
      const report = await sweepFiles(plinth.context)
      assert.ok(
        report.orphanObjects.some((k) => k.endsWith(file.sha256)),
        JSON.stringify(report),
      )
      assert.equal(await stored(file.sha256), false, 'the sweep removed them')
    })

    it('makes a second upload of the same bytes wait for the first, then return the same file', async () => {
      const content = Buffer.from('the same bytes twice, at once')
      proxy.setMode('half-open')
      const first = upload(plinth, alice, [{ name: 'file', filename: 'twice.txt', content }])
      await waitFor('the first upload to reserve its key', async () => (await reservations()).length === 1)
      const second = upload(plinth, alice, [{ name: 'file', filename: 'twice.txt', content }])
      proxy.restore()
      const [a, b] = await Promise.all([first, second])
      assert.equal(a.statusCode, 201, a.body)
      assert.equal(b.statusCode, 201, b.body)
      assert.equal(a.json().files[0].id, b.json().files[0].id)
      assert.equal((await rowsNamed('twice.txt')).length, 1)
      assert.deepEqual(await reservations(), [])
    })
  })
}
