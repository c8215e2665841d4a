import assert from 'node:assert/strict'
import { createServer } from 'node:http'
import { after, before, describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { S3_MAX_ATTEMPTS } from '../src/infra/s3/client.ts'
import { targetFromConfig } from '../src/modules/backups/backup.service.ts'
import { isPlinthError } from '../src/shared/errors.ts'
import { createUser, NO_RATE_LIMITS, uniqueEmail } from './helpers/accounts.ts'
import { assertProblem } from './helpers/assert-problem.ts'
import { type BlackHole, startBlackHole } from './helpers/black-hole.ts'
import { upload } from './helpers/files-kit.ts'
import { startS3rver } from './helpers/s3rver.ts'
import { testConfig } from './helpers/test-config.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'

// An S3 endpoint that accepts the connection and never answers must fail the call, not hold it
// forever. With a 250 ms socket timeout, a call ends after S3_MAX_ATTEMPTS timed-out attempts and
// their backoff (under 2 s); BOUND_MS leaves a loaded machine room while staying far below
// "forever" (each test also has a timeout, so that without the fix it fails instead of hanging).
const SOCKET_TIMEOUT = '250ms'
const BOUND_MS = 15_000
const TEST_TIMEOUT = { timeout: 60_000 }

/** How long `promise` took to settle, and its rejection (it must reject). */
async function timedRejection(promise: Promise<unknown>): Promise<{ ms: number; error: unknown }> {
  const started = performance.now()
  try {
    await promise
  } catch (error) {
    return { ms: performance.now() - started, error }
  }
  assert.fail('expected the call to fail')
}

describe('S3 calls against an endpoint that accepts and never answers (PLINTH_S3_SOCKET_TIMEOUT)', () => {
  let hole: BlackHole
  before(async () => {
    hole = await startBlackHole()
  })
  after(() => hole?.close())

  it(
    'fails a backup target call with 503 PLINTH_BACKUP_TARGET_UNAVAILABLE within the bound, each attempt timed out',
    TEST_TIMEOUT,
    async () => {
      const target = targetFromConfig(
        testConfig({
          PLINTH_BACKUP_S3_BUCKET: 'backups',
          PLINTH_BACKUP_S3_ENDPOINT: hole.endpoint,
          PLINTH_BACKUP_S3_FORCE_PATH_STYLE: 'true',
          PLINTH_BACKUP_S3_ACCESS_KEY_ID: 'key',
          PLINTH_BACKUP_S3_SECRET_ACCESS_KEY: 'secret',
          PLINTH_S3_SOCKET_TIMEOUT: SOCKET_TIMEOUT,
        }),
      )
      const before = hole.accepted
      for (const call of [
        () => target.list(),
        () => target.writeText('a.manifest.json', '{}'),
        () => target.open('a.archive'),
      ]) {
        const { ms, error } = await timedRejection(call())
        assert.ok(isPlinthError(error), String(error))
        assert.equal(error.code, 'PLINTH_BACKUP_TARGET_UNAVAILABLE')
        assert.equal(error.status, 503)
        assert.match(error.message, /TimeoutError/)
        assert.ok(ms < BOUND_MS, `failed after ${Math.round(ms)} ms`)
      }
      // Each attempt reached the endpoint and was given up (a timed-out socket is not reused); a
      // download waits for its headers once (its client has no socket timeout: see the next test).
      assert.equal(hole.accepted - before, 2 * S3_MAX_ATTEMPTS + 1)
    },
  )

  it(
    'does not cut a download whose reader pauses for longer than the timeout (nobody reads: the endpoint is not silent)',
    TEST_TIMEOUT,
    async () => {
      const s3 = await startS3rver('paused')
      try {
        const target = targetFromConfig(
          testConfig({
            PLINTH_BACKUP_S3_BUCKET: s3.bucket,
            PLINTH_BACKUP_S3_ENDPOINT: s3.endpoint,
            PLINTH_BACKUP_S3_FORCE_PATH_STYLE: 'true',
            PLINTH_BACKUP_S3_ACCESS_KEY_ID: s3.connection.accessKeyId,
            PLINTH_BACKUP_S3_SECRET_ACCESS_KEY: s3.connection.secretAccessKey,
            PLINTH_S3_SOCKET_TIMEOUT: SOCKET_TIMEOUT,
          }),
        )
        // Far more than the socket buffers hold: the endpoint waits for the reader to read.
        const text = JSON.stringify({ filler: 'x'.repeat(8 * 1024 * 1024) })
        await target.writeText('big.manifest.json', text)
        const stream = await target.open('big.manifest.json')
        let failed: unknown
        stream.once('error', (err) => (failed = err))
        // The pause is the reader's own (a restore busy elsewhere, a slow client): 4 × the timeout.
        await sleep(1000)
        let bytes = 0
        for await (const chunk of stream) bytes += (chunk as Buffer).length
        assert.equal(failed, undefined)
        assert.equal(bytes, Buffer.byteLength(text))
      } finally {
        await s3.stop()
      }
    },
  )

  it(
    'fails a download whose endpoint goes silent mid-body while the reader waits',
    TEST_TIMEOUT,
    async () => {
      // Answers every request with the headers and the first bytes of a body it never finishes.
      const server = createServer((_req, res) => {
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': '1000' })
        res.write(Buffer.alloc(10))
      })
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
      try {
        const { port } = server.address() as { port: number }
        const target = targetFromConfig(
          testConfig({
            PLINTH_BACKUP_S3_BUCKET: 'backups',
            PLINTH_BACKUP_S3_ENDPOINT: `http://127.0.0.1:${port}`,
            PLINTH_BACKUP_S3_FORCE_PATH_STYLE: 'true',
            PLINTH_BACKUP_S3_ACCESS_KEY_ID: 'key',
            PLINTH_BACKUP_S3_SECRET_ACCESS_KEY: 'secret',
            PLINTH_S3_SOCKET_TIMEOUT: SOCKET_TIMEOUT,
          }),
        )
        const stream = await target.open('a.archive')
        const { ms, error } = await timedRejection(
          (async () => {
            for await (const _ of stream);
          })(),
        )
        assert.equal((error as Error).name, 'TimeoutError', String(error))
        assert.ok(ms < BOUND_MS, `failed after ${Math.round(ms)} ms`)
      } finally {
        server.closeAllConnections()
        await new Promise((resolve) => server.close(resolve))
      }
    },
  )

  describe('files stored in such a bucket', () => {
    let plinth: TestPlinth
    before(async () => {
      plinth = await startTestPlinth({
        env: {
          ...NO_RATE_LIMITS,
          PLINTH_RATE_LIMIT_UPLOAD: '0',
          PLINTH_FILES_S3_BUCKET: 'files',
          PLINTH_FILES_S3_ENDPOINT: hole.endpoint,
          PLINTH_FILES_S3_FORCE_PATH_STYLE: 'true',
          PLINTH_FILES_S3_ACCESS_KEY_ID: 'key',
          PLINTH_FILES_S3_SECRET_ACCESS_KEY: 'secret',
          PLINTH_S3_SOCKET_TIMEOUT: SOCKET_TIMEOUT,
        },
      })
    })
    after(() => plinth?.close())

    it(
      'answers an upload 503 PLINTH_FILES_STORAGE_UNAVAILABLE within the bound, and stores no row',
      TEST_TIMEOUT,
      async () => {
        const alice = await createUser(plinth, uniqueEmail('alice'), 'member')
        const started = performance.now()
        const res = await upload(plinth, alice, [
          { name: 'file', filename: 'notes.txt', content: Buffer.from('to a bucket that never answers\n') },
        ])
        const ms = performance.now() - started
        assertProblem(res, 503, 'PLINTH_FILES_STORAGE_UNAVAILABLE')
        assert.ok(ms < BOUND_MS, `answered after ${Math.round(ms)} ms`)
        const listed = await plinth.app.inject({
          url: '/api/v1/files',
          headers: { authorization: `Bearer ${alice.token}` },
        })
        assert.equal(listed.statusCode, 200, listed.body)
        assert.deepEqual(listed.json().files, [])
      },
    )
  })
})
