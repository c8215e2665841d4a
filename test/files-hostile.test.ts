import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PassThrough } from 'node:stream'
import { after, before, describe, it } from 'node:test'
import { crc32, deflateSync } from 'node:zlib'
import sharp from 'sharp'
import { bearer, createUser, NO_RATE_LIMITS, type Session, uniqueEmail, waitFor } from './helpers/accounts.ts'
import { assertProblem } from './helpers/assert-problem.ts'
import { filesUnder, multipartBody, png, upload } from './helpers/files-kit.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'

/** A PNG chunk with its length and CRC. */
function chunk(type: string, data: Buffer): Buffer {
  const len = Buffer.alloc(4)
  len.writeUInt32BE(data.length)
  const body = Buffer.concat([Buffer.from(type, 'ascii'), data])
  const crc = Buffer.alloc(4)
  crc.writeUInt32BE(crc32(body))
  return Buffer.concat([len, body, crc])
}

/** A well-formed PNG header claiming `width`×`height` pixels, with one tiny compressed row: a pixel bomb. */
function pngBomb(width: number, height: number): Buffer {
  const ihdr = Buffer.alloc(13)
  ihdr.writeUInt32BE(width, 0)
  ihdr.writeUInt32BE(height, 4)
  ihdr[8] = 8 // bit depth
  ihdr[9] = 0 // greyscale
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(Buffer.alloc(width + 1))),
    chunk('IEND', Buffer.alloc(0)),
  ])
}

const KB = 1024

describe('hostile uploads: every one a 4xx problem, nothing left behind', () => {
  const dir = mkdtempSync(join(tmpdir(), 'plinth-files-hostile-'))
  let plinth: TestPlinth
  let mallory: Session
  let racer: Session
  const statuses: number[] = []
  const send = async (who: Session, parts: Parameters<typeof upload>[2]) => {
    const res = await upload(plinth, who, parts)
    statuses.push(res.statusCode)
    return res
  }
  const one = (filename: string, content: Buffer, fields: Record<string, string> = {}, who = mallory) =>
    send(who, [
      ...Object.entries(fields).map(([name, value]) => ({ name, value })),
      { name: 'file', filename, content, type: 'image/png' },
    ])
  const stored = () => filesUnder(dir).filter((k) => !k.startsWith('.staging/'))
  const staged = () => filesUnder(dir).filter((k) => k.startsWith('.staging/'))
  const rows = async (owner: string) =>
    (await plinth.db.kysely.selectFrom('files').select('id').where('owner', '=', owner).execute()).length

  before(async () => {
    plinth = await startTestPlinth({
      env: {
        ...NO_RATE_LIMITS,
        PLINTH_RATE_LIMIT_UPLOAD: '0',
        PLINTH_FILES_DIR: dir,
        PLINTH_FILES_MAX_FILE_SIZE: '64kb',
        PLINTH_FILES_MAX_REQUEST_SIZE: '200kb',
        PLINTH_FILES_MAX_FILES_PER_REQUEST: '4',
        PLINTH_FILES_QUOTA: '256kb',
        PLINTH_FILES_UPLOAD_IDLE_TIMEOUT: '1s',
      },
    })
    mallory = await createUser(plinth, uniqueEmail('mallory'), 'member')
    racer = await createUser(plinth, uniqueEmail('racer'), 'member')
  })
  after(async () => {
    await plinth?.close()
    rmSync(dir, { recursive: true, force: true })
  })

  it('refuses a decompression bomb (pixels beyond the limit) before decoding it', async () => {
    const bomb = pngBomb(100_000, 100_000)
    assert.ok(bomb.length < 2000)
    const started = Date.now()
    assertProblem(await one('bomb.png', bomb), 422, 'PLINTH_FILE_IMAGE_INVALID')
    assert.ok(Date.now() - started < 5000, 'refused from the header, not after decoding 10 gigapixels')
  })

  it('refuses truncated and malformed images', async () => {
    const good = await png(64, 64)
    assertProblem(
      await one('cut.png', good.subarray(0, Math.floor(good.length / 2))),
      422,
      'PLINTH_FILE_IMAGE_INVALID',
    )
    const jpeg = await sharp(Buffer.alloc(64 * 64 * 3, 90), { raw: { width: 64, height: 64, channels: 3 } })
      .jpeg()
      .toBuffer()
    assertProblem(
      await one('cut.jpg', jpeg.subarray(0, Math.floor(jpeg.length / 2))),
      422,
      'PLINTH_FILE_IMAGE_INVALID',
    )
    assertProblem(
      await one('gif.gif', Buffer.from('GIF89a/*garbage*/=alert(document.cookie)//;')),
      422,
      'PLINTH_FILE_IMAGE_INVALID',
    )
  })

  it('decides the type from the bytes: HTML named .png and sent as image/png is HTML, and refused', async () => {
    const res = await one(
      'innocent.png',
      Buffer.from('<!DOCTYPE html><html><body><script>alert(1)</script></body></html>'),
    )
    const body = assertProblem(res, 415, 'PLINTH_FILE_TYPE_NOT_ALLOWED')
    assert.match(String(body.detail), /text\/html/)
    const sneaky = await one('notes.txt', Buffer.from('just some text\n<script>steal()</script>\n'))
    assertProblem(sneaky, 415, 'PLINTH_FILE_TYPE_NOT_ALLOWED')
  })

  it('refuses SVG (script, external entities) by default, and for avatars whatever the settings', async () => {
    const svg = Buffer.from(
      '<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>' +
        '<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script><text>&xxe;</text></svg>',
    )
    assertProblem(await one('logo.svg', svg), 415, 'PLINTH_FILE_TYPE_NOT_ALLOWED')
    assertProblem(await one('logo.svg', svg, { purpose: 'avatar' }), 415, 'PLINTH_FILE_TYPE_NOT_ALLOWED')
  })

  it('neutralises polyglots it accepts: a valid GIF carrying script, a PDF carrying HTML', async () => {
    const gif = Buffer.concat([
      await sharp({ create: { width: 8, height: 8, channels: 3, background: '#f00' } })
        .gif()
        .toBuffer(),
      Buffer.from('<script>alert(1)</script>'),
    ])
    const g = await one('poly.gif', gif)
    assert.equal(g.statusCode, 201, g.body)
    const gd = await plinth.app.inject({ url: g.json().files[0].url, headers: bearer(mallory.token) })
    assert.equal(gd.headers['content-type'], 'image/gif')
    assert.equal(gd.headers['x-content-type-options'], 'nosniff')
    assert.match(String(gd.headers['content-security-policy']), /^sandbox/)

    const pdf = Buffer.from('%PDF-1.4\n<html><body><script>alert(1)</script></body></html>\n%%EOF\n')
    const p = await one('poly.pdf', pdf)
    assert.equal(p.statusCode, 201, p.body)
    assert.equal(p.json().files[0].type, 'application/pdf')
    const pd = await plinth.app.inject({ url: p.json().files[0].url, headers: bearer(mallory.token) })
    assert.match(String(pd.headers['content-disposition']), /^attachment;/, 'never rendered inline')
    assert.match(String(pd.headers['content-security-policy']), /sandbox/)
  })

  it('refuses empty, oversized and malformed requests', async () => {
    assertProblem(await one('empty.txt', Buffer.alloc(0)), 422, 'PLINTH_FILE_EMPTY')
    assertProblem(await one('big.bin', Buffer.alloc(65 * KB, 1)), 413, 'PLINTH_FILE_TOO_LARGE')
    const many = Array.from({ length: 5 }, (_, i) => ({
      name: 'file',
      filename: `${i}.txt`,
      content: Buffer.from(`n${i}`),
    }))
    assertProblem(await send(mallory, many), 413, 'PLINTH_FILE_REQUEST_TOO_LARGE')
    const heavy = Array.from({ length: 4 }, (_, i) => ({
      name: 'file',
      filename: `${i}.txt`,
      content: Buffer.alloc(60 * KB, 65 + i),
    }))
    assertProblem(await send(mallory, heavy), 413, 'PLINTH_FILE_REQUEST_TOO_LARGE')
    assertProblem(
      await send(mallory, [{ name: 'visibility', value: 'public' }]),
      400,
      'PLINTH_FILE_UPLOAD_INVALID',
    )
    assertProblem(
      await send(mallory, [{ name: 'visibility', value: 'everyone' }]),
      400,
      'PLINTH_FILE_UPLOAD_INVALID',
    )
    assertProblem(
      await send(mallory, [{ name: 'metadata', value: '[1]' }]),
      400,
      'PLINTH_FILE_UPLOAD_INVALID',
    )
    const json = await plinth.app.inject({
      method: 'POST',
      url: '/api/v1/files',
      headers: bearer(mallory.token),
      payload: { file: 'x' },
    })
    assertProblem(json, 400, 'PLINTH_FILE_UPLOAD_INVALID')
    const body = multipartBody([{ name: 'file', filename: 'a.txt', content: Buffer.from('abc') }])
    const truncated = await plinth.app.inject({
      method: 'POST',
      url: '/api/v1/files',
      headers: { ...bearer(mallory.token), ...body.headers },
      payload: body.payload.subarray(0, body.payload.length - 30),
    })
    assert.ok(truncated.statusCode >= 400 && truncated.statusCode < 500, truncated.body)
    assertProblem(truncated, truncated.statusCode, 'PLINTH_FILE_UPLOAD_INCOMPLETE')
  })

  it('keeps names to one harmless segment: no paths, control, bidirectional or invisible characters', async () => {
    const cases: [string, string][] = [
      ['../../../etc/passwd', 'passwd'],
      ['..\\..\\windows\\system32\\evil.txt', 'evil.txt'],
      ['invoice\u202Etxt.exe', 'invoicetxt.exe'],
      ['zero\u200Bwidth\u2066.txt', 'zerowidth.txt'],
      ['tab\there\u0007bell\u001b\u007f.txt', 'tabherebell.txt'],
      ['...', 'file'],
      ['a<b>c:d|e?f*.txt', 'a_b_c_d_e_f_.txt'],
      ['Ｆｕｌｌ　ｗｉｄｔｈ.txt', 'Ｆｕｌｌ　ｗｉｄｔｈ.txt'],
    ]
    for (const [i, [raw, expected]] of cases.entries()) {
      const res = await send(mallory, [
        { name: 'file', filename: raw, content: Buffer.from(`name case ${i}`) },
      ])
      assert.equal(res.statusCode, 201, `${JSON.stringify(raw)}: ${res.body}`)
      const file = res.json().files[0]
      assert.equal(file.name, expected, JSON.stringify(raw))
      const dl = await plinth.app.inject({ url: file.url, headers: bearer(mallory.token) })
      assert.match(
        String(dl.headers['content-disposition']),
        /^inline; filename="[\x20-\x7e]*"; filename\*=UTF-8''/,
      )
    }
    for (const key of stored()) assert.match(key, /^[0-9a-f-]{36}\/[0-9a-f]{2}\/[0-9a-f]{64}(\.v\/.+)?$/, key)
  })

  it('holds racing parallel uploads to the quota', async () => {
    const files = Array.from({ length: 8 }, (_, i) => Buffer.alloc(60 * KB, 97 + i))
    const results = await Promise.all(files.map((content, i) => one(`race-${i}.bin`, content, {}, racer)))
    const created = results.filter((r) => r.statusCode === 201).length
    for (const r of results.filter((x) => x.statusCode !== 201))
      assertProblem(r, 413, 'PLINTH_FILE_QUOTA_EXCEEDED')
    assert.equal(created, 4, '4 × 60 KB fit in 256 KB, a fifth does not')
    const usage = await plinth.app.inject({ url: '/api/v1/files/usage', headers: bearer(racer.token) })
    assert.ok(usage.json().bytes <= 256 * KB)
    assert.equal(await rows(racer.userId), 4)
    assert.equal(stored().filter((k) => k.startsWith(`${racer.userId}/`) && !k.includes('.v/')).length, 4)
  })

  it('cuts an upload that stops sending (408) and keeps nothing of it', async () => {
    const before = await rows(mallory.userId)
    const body = multipartBody([{ name: 'file', filename: 'slow.txt', content: Buffer.alloc(32 * KB, 66) }])
    const stream = new PassThrough()
    stream.write(body.payload.subarray(0, 2000)) // the headers and the start of the file, then silence
    const started = Date.now()
    const res = await plinth.app.inject({
      method: 'POST',
      url: '/api/v1/files',
      headers: { ...bearer(mallory.token), ...body.headers },
      payload: stream,
    })
    assertProblem(res, 408, 'PLINTH_HTTP_REQUEST_TIMEOUT')
    assert.ok(Date.now() - started < 10_000)
    stream.destroy()
    assert.equal(await rows(mallory.userId), before)
    await waitFor('the staged part to go', () => staged().length === 0)
  })

  it('keeps nothing of an upload whose connection is cut half-way', async () => {
    const address = await plinth.listen()
    const { port } = new URL(address)
    const before = await rows(mallory.userId)
    const storedBefore = stored().length
    const body = multipartBody([{ name: 'file', filename: 'half.txt', content: Buffer.alloc(48 * KB, 67) }])
    const socket = connect({ host: '127.0.0.1', port: Number(port) })
    await new Promise((r) => socket.once('connect', r))
    socket.write(
      `POST /api/v1/files HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${mallory.token}\r\n` +
        `Content-Type: ${body.headers['content-type']}\r\nContent-Length: ${body.payload.length}\r\n\r\n`,
    )
    socket.write(body.payload.subarray(0, Math.floor(body.payload.length / 2)))
    await waitFor('the upload to be staged', () => staged().length > 0)
    socket.destroy()
    await waitFor('the staged half to go', () => staged().length === 0)
    assert.equal(await rows(mallory.userId), before)
    assert.equal(stored().length, storedBefore)
  })

  it('answered none of these with a 5xx', () => {
    assert.ok(statuses.length > 20)
    assert.deepEqual(
      statuses.filter((s) => s >= 500),
      [],
    )
  })
})
