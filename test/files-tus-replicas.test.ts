/**
 * Resumable uploads across replicas: two Plinth instances on one PostgreSQL database and one Redis,
 * files in one S3-protocol bucket (s3rver, a real server process), the tus parts in one shared
 * directory (PLINTH_FILES_TUS_DIR, a shared volume in production). An upload started on one replica
 * is resumed on the other, including after a cut that left the first replica's request half-open:
 * the Redis locks make that request let go.
 */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3'
import { bearer, createUser, NO_RATE_LIMITS, type Session, uniqueEmail, waitFor } from './helpers/accounts.ts'
import { assertProblem } from './helpers/assert-problem.ts'
import { startS3rver } from './helpers/s3rver.ts'
import { skipUnlessPostgres, skipUnlessRedis, TEST_REDIS_URL } from './helpers/services.ts'
import { createTestDatabase, type TestDatabase } from './helpers/test-database.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'

const TUS = { 'tus-resumable': '1.0.0' }
const b64 = (s: string) => Buffer.from(s).toString('base64')
/** `length` bytes of text (base64 of random bytes): an allowed type whose every byte is new. */
const text = (length: number) => Buffer.from(randomBytes(length).toString('base64')).subarray(0, length)
const skip = (await skipUnlessPostgres()) || (await skipUnlessRedis())

describe('resumable uploads across two replicas (PostgreSQL, Redis, S3)', { skip }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'plinth-files-tus-replicas-'))
  const bucket = 'files'
  let s3: Awaited<ReturnType<typeof startS3rver>>
  let client: S3Client
  let db: TestDatabase
  let a: TestPlinth
  let b: TestPlinth
  let alice: Session
  let env: Record<string, string>

  const tus = (
    replica: TestPlinth,
    method: 'POST' | 'HEAD' | 'PATCH',
    url: string,
    headers: Record<string, string> = {},
    payload?: Buffer,
  ) =>
    replica.app.inject({
      method,
      url,
      headers: { ...bearer(alice.token), ...TUS, ...headers },
      ...(payload ? { payload } : {}),
    })
  const patch = (replica: TestPlinth, url: string, offset: number, bytes: Buffer) =>
    tus(
      replica,
      'PATCH',
      url,
      { 'upload-offset': String(offset), 'content-type': 'application/offset+octet-stream' },
      bytes,
    )
  const create = async (replica: TestPlinth, length: number) => {
    const res = await tus(replica, 'POST', '/api/v1/uploads', {
      'upload-length': String(length),
      'upload-metadata': `filename ${b64('report.txt')}`,
    })
    assert.equal(res.statusCode, 201, res.body)
    return String(res.headers.location)
  }
  const tusDir = join(dir, 'tus')
  const uploadsLeft = () => readdirSync(tusDir)
  const bucketKeys = async () => {
    const page = await client.send(new ListObjectsV2Command({ Bucket: bucket }))
    return (page.Contents ?? []).map((o) => o.Key!)
  }
  const offsetOn = async (replica: TestPlinth, url: string) => {
    const head = await tus(replica, 'HEAD', url)
    assert.equal(head.statusCode, 200)
    return Number(head.headers['upload-offset'])
  }

  before(async () => {
    s3 = await startS3rver(bucket)
    client = new S3Client({
      endpoint: s3.endpoint,
      region: 'us-east-1',
      forcePathStyle: true,
      credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
    })
    db = await createTestDatabase()
    env = {
      ...NO_RATE_LIMITS,
      PLINTH_RATE_LIMIT_UPLOAD: '0',
      DATABASE_URL: db.url,
      REDIS_URL: TEST_REDIS_URL,
      PLINTH_REDIS_PREFIX: `plinth-test:${process.pid}:${randomBytes(4).toString('hex')}:`,
      PLINTH_FILES_S3_BUCKET: bucket,
      PLINTH_FILES_S3_ENDPOINT: s3.endpoint,
      PLINTH_FILES_S3_FORCE_PATH_STYLE: 'true',
      PLINTH_FILES_S3_ACCESS_KEY_ID: 'S3RVER',
      PLINTH_FILES_S3_SECRET_ACCESS_KEY: 'S3RVER',
      PLINTH_FILES_TUS_DIR: tusDir,
    }
    // One after the other: the first one migrates the shared database.
    a = await startTestPlinth({ env })
    b = await startTestPlinth({ env })
    alice = await createUser(a, uniqueEmail('alice'), 'member')
  })
  after(async () => {
    await a?.close()
    await b?.close()
    await db?.drop()
    client?.destroy()
    await s3?.stop()
    rmSync(dir, { recursive: true, force: true })
  })

  it('finishes on replica B an upload started on replica A, then stores it once, in the bucket', async () => {
    const content = text(300_000)
    const location = await create(a, content.length)
    const first = await patch(a, location, 0, content.subarray(0, 120_000))
    assert.equal(first.statusCode, 204, first.body)
    assert.equal(first.headers['upload-offset'], '120000')
    const id = location.split('/').pop()!
    assert.equal(statSync(join(tusDir, id)).size, 120_000)

    assert.equal(await offsetOn(b, location), 120_000)
    const rest = await patch(b, location, 120_000, content.subarray(120_000))
    assert.equal(rest.statusCode, 204, rest.body)
    const url = String(rest.headers['plinth-file-url'])
    assert.match(url, /^\/api\/v1\/files\/[0-9a-f-]{36}$/)

    // Either replica serves the stored file, which is in the bucket; what tus kept of it is gone.
    assert.ok((await bucketKeys()).some((k) => k.startsWith('files/')))
    for (const replica of [a, b]) {
      const dl = await replica.app.inject({ url, headers: bearer(alice.token) })
      assert.equal(dl.statusCode, 200)
      assert.deepEqual(dl.rawPayload, content)
    }
    assert.deepEqual(uploadsLeft(), [])
  })

  it('takes over on B an upload whose PATCH to A was left half-open, A letting go of its lock', async (t) => {
    const content = text(200_000)
    const location = await create(a, content.length)
    const { port } = new URL(await a.listen())
    const socket = connect({ host: '127.0.0.1', port: Number(port) })
    t.after(() => socket.destroy())
    await new Promise((r) => socket.once('connect', r))
    // A PATCH that sends some bytes and then nothing: its connection stays open, its lock held.
    socket.write(
      `PATCH ${location} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${alice.token}\r\n` +
        `Tus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\n` +
        `Content-Length: ${content.length}\r\n\r\n`,
    )
    socket.write(content.subarray(0, 80_000))
    let ended = false
    socket.on('data', () => {
      ended = true
    })
    socket.on('close', () => {
      ended = true
    })
    // B's HEAD asks for the lock; A's request is cancelled and what it got is kept.
    const offset = await waitFor(
      'replica B to report the bytes replica A received',
      async () => {
        const head = await tus(b, 'HEAD', location)
        return head.statusCode === 200 && Number(head.headers['upload-offset']) > 0
          ? Number(head.headers['upload-offset'])
          : undefined
      },
      { timeoutMs: 30_000, intervalMs: 100 },
    )
    assert.equal(offset, 80_000)
    // Replica A answered or closed its request: it let go because B asked, through Redis (its
    // connection is still open on our side, and nothing else ends a request this soon).
    await waitFor('replica A to end its half-open PATCH', () => ended, { timeoutMs: 10_000 })
    socket.destroy()
    const rest = await patch(b, location, offset, content.subarray(offset))
    assert.equal(rest.statusCode, 204, rest.body)
    const dl = await a.app.inject({
      url: String(rest.headers['plinth-file-url']),
      headers: bearer(alice.token),
    })
    assert.deepEqual(dl.rawPayload, content)
  })

  it('answers 503 PLINTH_FILES_STORAGE_UNAVAILABLE on a replica whose Redis is away: never unlocked', async (t) => {
    const content = text(1000)
    const location = await create(a, content.length)
    // A third replica, its Redis address answering nothing (a port no one listens on).
    const c = await startTestPlinth({ env: { ...env, REDIS_URL: 'redis://127.0.0.1:9' } })
    t.after(() => c.close())
    assertProblem(await patch(c, location, 0, content), 503, 'PLINTH_FILES_STORAGE_UNAVAILABLE')
    // The upload is untouched, and goes on where Redis answers.
    assert.equal(await offsetOn(a, location), 0)
    assert.equal((await patch(a, location, 0, content)).statusCode, 204)
  })
})
