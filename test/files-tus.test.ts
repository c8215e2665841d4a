import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { bearer, createUser, NO_RATE_LIMITS, type Session, uniqueEmail, waitFor } from './helpers/accounts.ts'
import { assertProblem } from './helpers/assert-problem.ts'
import { filesUnder } from './helpers/files-kit.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'

const TUS = { 'tus-resumable': '1.0.0' }
const b64 = (s: string) => Buffer.from(s).toString('base64')

describe('resumable uploads (tus) under /api/v1/uploads', () => {
  const dir = mkdtempSync(join(tmpdir(), 'plinth-files-tus-'))
  let plinth: TestPlinth
  let alice: Session
  let bob: Session
  const tus = (
    who: Session,
    method: 'POST' | 'HEAD' | 'PATCH' | 'DELETE',
    url: string,
    headers: Record<string, string> = {},
    payload?: Buffer,
  ) =>
    plinth.app.inject({
      method,
      url,
      headers: { ...bearer(who.token), ...TUS, ...headers },
      ...(payload ? { payload } : {}),
    })
  const create = async (who: Session, length: number, metadata = `filename ${b64('report.txt')}`) => {
    const res = await tus(who, 'POST', '/api/v1/uploads', {
      'upload-length': String(length),
      'upload-metadata': metadata,
    })
    assert.equal(res.statusCode, 201, res.body)
    return String(res.headers.location)
  }

  before(async () => {
    plinth = await startTestPlinth({
      env: {
        ...NO_RATE_LIMITS,
        PLINTH_RATE_LIMIT_UPLOAD: '0',
        PLINTH_FILES_DIR: dir,
        PLINTH_FILES_MAX_FILE_SIZE: '1mb',
      },
    })
    alice = await createUser(plinth, uniqueEmail('alice'), 'member')
    bob = await createUser(plinth, uniqueEmail('bob'), 'member')
  })
  after(async () => {
    await plinth?.close()
    rmSync(dir, { recursive: true, force: true })
  })

  it('resumes after a cut at the offset the server reports, then stores the file like any upload', async () => {
    const content = Buffer.from('line of a resumable report\n'.repeat(20_000)).subarray(0, 500_000)
    const location = await create(alice, content.length)
    assert.match(location, /^\/api\/v1\/uploads\/[0-9a-f-]{36}_[0-9a-f]{32}$/)

    const first = await tus(
      alice,
      'PATCH',
      location,
      { 'upload-offset': '0', 'content-type': 'application/offset+octet-stream' },
      content.subarray(0, 200_000),
    )
    assert.equal(first.statusCode, 204, first.body)
    assert.equal(first.headers['upload-offset'], '200000')

    // The connection drops; the client asks where the upload stands.
    const head = await tus(alice, 'HEAD', location)
    assert.equal(head.statusCode, 200)
    assert.equal(head.headers['upload-offset'], '200000')
    assert.equal(head.headers['upload-length'], String(content.length))

    const wrong = await tus(
      alice,
      'PATCH',
      location,
      { 'upload-offset': '100', 'content-type': 'application/offset+octet-stream' },
      content.subarray(100, 200),
    )
    assertProblem(wrong, 409, 'PLINTH_UPLOAD_OFFSET_MISMATCH')

    const rest = await tus(
      alice,
      'PATCH',
      location,
      { 'upload-offset': '200000', 'content-type': 'application/offset+octet-stream' },
      content.subarray(200_000),
    )
    assert.equal(rest.statusCode, 204, rest.body)
    const fileId = String(rest.headers['plinth-file-id'])
    const url = String(rest.headers['plinth-file-url'])
    assert.equal(url, `/api/v1/files/${fileId}`)

    const dl = await plinth.app.inject({ url, headers: bearer(alice.token) })
    assert.equal(dl.statusCode, 200)
    assert.equal(
      createHash('sha256').update(dl.rawPayload).digest('hex'),
      createHash('sha256').update(content).digest('hex'),
    )
    const info = (await plinth.app.inject({ url: '/api/v1/files', headers: bearer(alice.token) }))
      .json()
      .files.find((f: { id: string }) => f.id === fileId)
    assert.equal(info.name, 'report.txt')
    assert.equal(info.type, 'text/plain')
    assert.deepEqual(
      filesUnder(join(dir, '.staging')).filter(
        (f) => f.startsWith('tus/') && !f.endsWith('.json') && f !== 'tus/',
      ),
      [],
      'the parts are gone',
    )
  })

  it('keeps the bytes that arrived before the connection was cut, and resumes from there', async () => {
    const content = Buffer.alloc(600_000)
    for (let i = 0; i < content.length; i++) content[i] = 32 + ((i * 31) % 90)
    const location = await create(alice, content.length)
    const { port } = new URL(await plinth.listen())
    const socket = connect({ host: '127.0.0.1', port: Number(port) })
    await new Promise((r) => socket.once('connect', r))
    socket.write(
      `PATCH ${location} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${alice.token}\r\n` +
        `Tus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\n` +
        `Content-Length: ${content.length}\r\n\r\n`,
    )
    socket.write(content.subarray(0, 250_000))
    const partFile = join(dir, '.staging', 'tus', location.split('/').pop()!)
    await waitFor('the first bytes on disk', async () => {
      const { statSync } = await import('node:fs')
      return statSync(partFile, { throwIfNoEntry: false })?.size === 250_000
    })
    socket.destroy()
    const offset = await waitFor('the server to settle the cut PATCH', async () => {
      const head = await tus(alice, 'HEAD', location)
      return head.statusCode === 200 && Number(head.headers['upload-offset']) > 0
        ? Number(head.headers['upload-offset'])
        : undefined
    })
    assert.equal(offset, 250_000)
    const rest = await tus(
      alice,
      'PATCH',
      location,
      { 'upload-offset': String(offset), 'content-type': 'application/offset+octet-stream' },
      content.subarray(offset),
    )
    assert.equal(rest.statusCode, 204, rest.body)
    const dl = await plinth.app.inject({
      url: String(rest.headers['plinth-file-url']),
      headers: bearer(alice.token),
    })
    assert.deepEqual(dl.rawPayload, content)
  })

  it("lets no one else continue, inspect or end someone's upload", async () => {
    const location = await create(alice, 10)
    assert.equal((await tus(bob, 'HEAD', location)).statusCode, 404, 'HEAD answers without a body')
    assertProblem(
      await tus(
        bob,
        'PATCH',
        location,
        { 'upload-offset': '0', 'content-type': 'application/offset+octet-stream' },
        Buffer.from('0123456789'),
      ),
      404,
      'PLINTH_UPLOAD_NOT_FOUND',
    )
    assertProblem(await tus(bob, 'DELETE', location), 404, 'PLINTH_UPLOAD_NOT_FOUND')
    assert.equal((await tus(alice, 'DELETE', location)).statusCode, 204)
    assert.equal((await tus(alice, 'HEAD', location)).statusCode, 404)
  })

  it('refuses uploads over the size limit and content the checks refuse', async () => {
    const big = await tus(alice, 'POST', '/api/v1/uploads', { 'upload-length': String(2 * 1024 * 1024) })
    assertProblem(big, 413, 'PLINTH_FILE_TOO_LARGE')
    const html = Buffer.from('<!doctype html><html><script>alert(1)</script></html>')
    const location = await create(alice, html.length, `filename ${b64('a.png')}`)
    const res = await tus(
      alice,
      'PATCH',
      location,
      { 'upload-offset': '0', 'content-type': 'application/offset+octet-stream' },
      html,
    )
    assertProblem(res, 415, 'PLINTH_FILE_TYPE_NOT_ALLOWED')
    assert.equal((await tus(alice, 'HEAD', location)).statusCode, 404)
  })
})
