import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import sharp from 'sharp'
import { bearer, createUser, NO_RATE_LIMITS, type Session, uniqueEmail, waitFor } from './helpers/accounts.ts'
import { assertProblem } from './helpers/assert-problem.ts'
import { filesUnder, jpegWithExif, png, uploadOne } from './helpers/files-kit.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'

describe('image variants and transforms', () => {
  const dir = mkdtempSync(join(tmpdir(), 'plinth-files-img-'))
  let plinth: TestPlinth
  let alice: Session
  const get = (url: string, headers: Record<string, string> = {}) =>
    plinth.app.inject({ url, headers: { ...bearer(alice.token), ...headers } })
  const metric = async (name: string) => {
    const res = await plinth.app.inject({ url: '/api/metrics' })
    return res.body
      .split('\n')
      .filter((l) => l.startsWith(name))
      .join('\n')
  }

  before(async () => {
    plinth = await startTestPlinth({
      env: {
        ...NO_RATE_LIMITS,
        PLINTH_RATE_LIMIT_UPLOAD: '0',
        PLINTH_FILES_DIR: dir,
        PLINTH_JOBS_POLL_INTERVAL: '500ms',
        PLINTH_METRICS_PUBLIC: 'true',
      },
    })
    alice = await createUser(plinth, uniqueEmail('alice'), 'member')
  })
  after(async () => {
    await plinth?.close()
    rmSync(dir, { recursive: true, force: true })
  })

  it('makes the declared variants in a job after the upload, and serves them', async () => {
    const file = await uploadOne(plinth, alice, 'photo.png', await png(1600, 1200), { purpose: 'image' })
    assert.equal(file.width, 1600)
    assert.equal(file.height, 1200)
    await waitFor(
      'the thumb and medium variants',
      () => {
        const keys = filesUnder(dir).filter((k) => k.includes(file.sha256))
        return keys.some((k) => k.endsWith('.v/thumb.webp')) && keys.some((k) => k.endsWith('.v/medium.webp'))
      },
      { timeoutMs: 30_000, intervalMs: 200 },
    )
    const thumb = await get(`${file.url}?variant=thumb`)
    assert.equal(thumb.statusCode, 200, thumb.body)
    assert.equal(thumb.headers['content-type'], 'image/webp')
    const meta = await sharp(thumb.rawPayload).metadata()
    assert.equal(meta.format, 'webp')
    assert.deepEqual([meta.width, meta.height], [256, 192])
    assert.match(String(thumb.headers.etag), /-thumb\.webp"$/)
    assert.equal(
      (await get(`${file.url}?variant=thumb`, { 'if-none-match': String(thumb.headers.etag) })).statusCode,
      304,
    )
    const medium = await sharp((await get(`${file.url}?variant=medium&format=jpeg`)).rawPayload).metadata()
    assert.deepEqual([medium.format, medium.width, medium.height], ['jpeg', 1024, 768])
  })

  it('transforms on the fly within the allow-list, and caches what it made', async () => {
    const file = await uploadOne(plinth, alice, 'pic.png', await png(800, 400))
    const url = `${file.url}?w=128&h=128&fit=cover&format=avif`
    const first = await get(url)
    assert.equal(first.statusCode, 200, first.body)
    assert.equal(first.headers['content-type'], 'image/avif')
    const meta = await sharp(first.rawPayload).metadata()
    assert.deepEqual([meta.width, meta.height], [128, 128])
    const hits = await metric('plinth_files_transform_cache_total{result="hit"}')
    const second = await get(url)
    assert.deepEqual(second.rawPayload, first.rawPayload)
    assert.notEqual(
      await metric('plinth_files_transform_cache_total{result="hit"}'),
      hits,
      'the second one is a hit',
    )
    assert.ok(filesUnder(dir).some((k) => k.endsWith('.v/w128-h128-cover.avif')))

    assertProblem(await get(`${file.url}?w=129`), 400, 'PLINTH_FILE_TRANSFORM_INVALID')
    assertProblem(await get(`${file.url}?variant=huge`), 400, 'PLINTH_FILE_TRANSFORM_INVALID')
    assertProblem(await get(`${file.url}?variant=thumb&w=64`), 400, 'PLINTH_FILE_TRANSFORM_INVALID')
    assertProblem(await get(`${file.url}?format=bmp`), 400, 'PLINTH_HTTP_INVALID_REQUEST')
    const text = await uploadOne(plinth, alice, 'a.txt', Buffer.from('not an image'))
    assertProblem(await get(`${text.url}?w=64`), 400, 'PLINTH_FILE_TRANSFORM_INVALID')
  })

  it('applies the EXIF orientation and strips the metadata from variants', async () => {
    const original = await jpegWithExif(40, 20)
    assert.ok(original.includes(Buffer.from('secret-owner-name')), 'the upload carries EXIF')
    const file = await uploadOne(plinth, alice, 'rotated.jpg', original)
    const res = await get(`${file.url}?format=jpeg`)
    assert.equal(res.statusCode, 200, res.body)
    const meta = await sharp(res.rawPayload).metadata()
    assert.deepEqual([meta.width, meta.height], [20, 40], 'rotated upright')
    assert.equal(meta.exif, undefined)
    assert.equal(meta.orientation, undefined)
    assert.ok(!res.rawPayload.includes(Buffer.from('secret-owner-name')))
  })

  it('keeps the frames of an animated image in WebP and takes the first for JPEG', async () => {
    const frames = 3
    const frame = (red: number) =>
      sharp({ create: { width: 32, height: 32, channels: 4, background: { r: red, g: 0, b: 0, alpha: 1 } } })
        .png()
        .toBuffer()
    const gif = await sharp(await Promise.all([frame(10), frame(120), frame(250)]), {
      join: { animated: true },
    })
      .gif({ loop: 0, delay: [100, 100, 100] })
      .toBuffer()
    assert.equal((await sharp(gif, { animated: true }).metadata()).pages, frames)
    const file = await uploadOne(plinth, alice, 'anim.gif', gif)
    assert.deepEqual([file.width, file.height], [32, 32])
    const webp = await get(`${file.url}?w=64&format=webp`)
    assert.equal((await sharp(webp.rawPayload, { animated: true }).metadata()).pages, frames)
    const jpeg = await get(`${file.url}?w=64&format=jpeg`)
    const jm = await sharp(jpeg.rawPayload).metadata()
    assert.deepEqual([jm.width, jm.height, jm.pages ?? 1], [32, 32, 1])
  })
})
