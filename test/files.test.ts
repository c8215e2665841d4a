import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { bearer, createUser, NO_RATE_LIMITS, type Session, uniqueEmail } from './helpers/accounts.ts'
import { assertProblem } from './helpers/assert-problem.ts'
import { filesUnder, upload, uploadOne } from './helpers/files-kit.ts'
import { startS3rver } from './helpers/s3rver.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex')

interface Backend {
  env(): Record<string, string>
  /** Every stored key (objects and variants), to check what is left behind. */
  keys(): Promise<string[]>
}

function storageSuite(name: string, setup: () => Promise<Backend & { stop(): Promise<void> }>) {
  describe(`files on ${name}`, () => {
    let plinth: TestPlinth
    let backend: Backend & { stop(): Promise<void> }
    let alice: Session
    const get = (url: string, who?: Session, headers: Record<string, string> = {}) =>
      plinth.app.inject({ url, headers: { ...(who ? bearer(who.token) : {}), ...headers } })

    before(async () => {
      backend = await setup()
      plinth = await startTestPlinth({
        env: { ...NO_RATE_LIMITS, PLINTH_RATE_LIMIT_UPLOAD: '0', ...backend.env() },
      })
      alice = await createUser(plinth, uniqueEmail('alice'), 'member')
    })
    after(async () => {
      await plinth?.close()
      await backend?.stop()
    })

    it('stores an upload under its SHA-256 and serves it back byte for byte with its headers', async () => {
      const content = Buffer.from('hello, plinth files\n'.repeat(100))
      const file = await uploadOne(plinth, alice, 'notes.txt', content, { metadata: '{"project":"x"}' })
      assert.equal(file.sha256, sha(content))
      assert.equal(file.size, content.length)
      assert.equal(file.type, 'text/plain')
      assert.equal(file.name, 'notes.txt')
      assert.equal(file.visibility, 'private')
      assert.deepEqual(file.metadata, { project: 'x' })
      assert.ok((await backend.keys()).some((k) => k.endsWith(`/${sha(content)}`)))

      const res = await get(file.url, alice)
      assert.equal(res.statusCode, 200)
      assert.deepEqual(res.rawPayload, content)
      assert.equal(res.headers['content-type'], 'text/plain; charset=utf-8')
      assert.equal(res.headers.etag, `"${sha(content)}"`)
      assert.equal(res.headers['cache-control'], 'private, no-store')
      assert.equal(res.headers['x-content-type-options'], 'nosniff')
      assert.equal(res.headers['accept-ranges'], 'bytes')
      assert.match(String(res.headers['content-disposition']), /^inline; filename="notes.txt"/)
      assert.match(String(res.headers['content-security-policy']), /sandbox/)
      assert.ok(res.headers['last-modified'])
    })

    it('answers conditional requests with 304 and ranges with 206 or 416', async () => {
      const content = Buffer.from('0123456789'.repeat(10))
      const file = await uploadOne(plinth, alice, 'digits.txt', content)
      const first = await get(file.url, alice)
      const etag = String(first.headers.etag)
      const notModified = await get(file.url, alice, { 'if-none-match': etag })
      assert.equal(notModified.statusCode, 304)
      assert.equal(notModified.body, '')
      assert.equal(notModified.headers.etag, etag)
      const since = await get(file.url, alice, {
        'if-modified-since': String(first.headers['last-modified']),
      })
      assert.equal(since.statusCode, 304)
      const changed = await get(file.url, alice, { 'if-none-match': '"other"' })
      assert.equal(changed.statusCode, 200)

      const part = await get(file.url, alice, { range: 'bytes=10-19' })
      assert.equal(part.statusCode, 206)
      assert.equal(part.body, '0123456789')
      assert.equal(part.headers['content-range'], 'bytes 10-19/100')
      const suffix = await get(file.url, alice, { range: 'bytes=-5' })
      assert.equal(suffix.statusCode, 206)
      assert.equal(suffix.body, '56789')
      const open = await get(file.url, alice, { range: 'bytes=95-' })
      assert.equal(open.body, '56789')
      const stale = await get(file.url, alice, { range: 'bytes=0-1', 'if-range': '"not-it"' })
      assert.equal(stale.statusCode, 200, 'an If-Range that does not match sends the whole file')
      const beyond = await get(file.url, alice, { range: 'bytes=500-600' })
      assertProblem(beyond, 416, 'PLINTH_FILE_RANGE_NOT_SATISFIABLE')
      assert.equal(beyond.headers['content-range'], 'bytes */100')
    })

    it('de-duplicates the same bytes per owner and lists and counts your files', async () => {
      const content = Buffer.from('same bytes twice')
      const a = await uploadOne(plinth, alice, 'a.txt', content)
      const again = await upload(plinth, alice, [{ name: 'file', filename: 'b.txt', content }])
      assert.equal(again.statusCode, 201)
      assert.equal(again.json().files[0].id, a.id)
      assert.equal(again.json().files[0].deduplicated, true)
      const list = await get('/api/v1/files?limit=2', alice)
      assert.equal(list.statusCode, 200)
      assert.equal(list.json().files.length, 2)
      assert.ok(list.json().nextCursor)
      const next = await get(`/api/v1/files?limit=200&cursor=${list.json().nextCursor}`, alice)
      assert.ok(next.json().files.length >= 1)
      const ids = [...list.json().files, ...next.json().files].map((f: { id: string }) => f.id)
      assert.equal(new Set(ids).size, ids.length, 'pages do not overlap')
      const usage = await get('/api/v1/files/usage', alice)
      assert.equal(usage.json().files, ids.length)
      assertProblem(await get('/api/v1/files?cursor=bm9wZQ', alice), 400, 'PLINTH_FILE_CURSOR_INVALID')
    })

    it('deletes the row and the stored object together', async () => {
      const content = Buffer.from('to be deleted')
      const file = await uploadOne(plinth, alice, 'bye.txt', content)
      const del = await plinth.app.inject({ method: 'DELETE', url: file.url, headers: bearer(alice.token) })
      assert.equal(del.statusCode, 204)
      assertProblem(await get(file.url, alice), 404, 'PLINTH_FILE_NOT_FOUND')
      assert.ok(!(await backend.keys()).some((k) => k.includes(sha(content))))
      const again = await plinth.app.inject({ method: 'DELETE', url: file.url, headers: bearer(alice.token) })
      assertProblem(again, 404, 'PLINTH_FILE_NOT_FOUND')
    })

    it('stores several files of one request, and none when one of them is refused', async () => {
      const before = (await backend.keys()).length
      const res = await upload(plinth, alice, [
        { name: 'file', filename: 'one.txt', content: Buffer.from('first of two, unique 1') },
        {
          name: 'file',
          filename: 'evil.html',
          content: Buffer.from('<html><script>alert(1)</script></html>'),
        },
      ])
      assertProblem(res, 415, 'PLINTH_FILE_TYPE_NOT_ALLOWED')
      assert.equal((await backend.keys()).length, before, 'the first file went again')
      const ok = await upload(plinth, alice, [
        { name: 'file', filename: 'one.txt', content: Buffer.from('first of two, unique 2') },
        { name: 'file', filename: 'two.txt', content: Buffer.from('second of two, unique 2') },
      ])
      assert.equal(ok.statusCode, 201, ok.body)
      assert.equal(ok.json().files.length, 2)
    })
  })
}

storageSuite('the local disk', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'plinth-files-'))
  return {
    env: () => ({ PLINTH_FILES_DIR: dir }),
    keys: async () => filesUnder(dir).filter((k) => !k.startsWith('.staging/')),
    stop: async () => rmSync(dir, { recursive: true, force: true }),
  }
})

storageSuite('an S3-protocol server (s3rver)', async () => {
  const s3 = await startS3rver('files')
  return {
    env: () => ({
      PLINTH_FILES_S3_BUCKET: s3.bucket,
      PLINTH_FILES_S3_ENDPOINT: s3.endpoint,
      PLINTH_FILES_S3_FORCE_PATH_STYLE: 'true',
      PLINTH_FILES_S3_ACCESS_KEY_ID: s3.connection.accessKeyId,
      PLINTH_FILES_S3_SECRET_ACCESS_KEY: s3.connection.secretAccessKey,
    }),
    keys: () => s3.keys(),
    stop: () => s3.stop(),
  }
})
