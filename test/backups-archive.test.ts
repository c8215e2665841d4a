import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { describe, it } from 'node:test'
import { decryptArchive, encryptArchive, HEADER_BYTES } from '../src/modules/backups/archive-format.ts'
import { canonicalJson, sealHolds, sealOf } from '../src/modules/backups/backup-keys.ts'

const key = randomBytes(32)
const backupId = '20261206T010000Z-0123abcd'

async function collect(it: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Buffer[] = []
  for await (const c of it) parts.push(Buffer.from(c))
  return Buffer.concat(parts)
}
async function* pieces(data: Buffer, size: number) {
  for (let i = 0; i < data.length; i += size) yield data.subarray(i, i + size)
}
const seal = (data: Buffer, chunkSize: number, piece = 7) =>
  collect(encryptArchive(pieces(data, piece), { key, backupId, compression: 'zstd', chunkSize }))
const open = (archive: Buffer, k = key, id = backupId) =>
  collect(decryptArchive(pieces(archive, 13), { key: k, backupId: id }))

/** Offsets of each record (after the header), from their length fields. */
function records(archive: Buffer): { start: number; end: number }[] {
  const out = []
  for (let at = HEADER_BYTES; at < archive.length; ) {
    const end = at + 4 + 12 + archive.readUInt32BE(at) + 16
    out.push({ start: at, end })
    at = end
  }
  return out
}

describe('the archive format: AES-256-GCM in authenticated chunks', () => {
  for (const size of [0, 1, 63, 64, 65, 640, 1000]) {
    it(`round-trips ${size} bytes in 64-byte chunks, whatever the input's piece sizes`, async () => {
      const data = randomBytes(size)
      const archive = await seal(data, 64)
      assert.deepEqual(await open(archive), data)
      assert.equal(records(archive).length, Math.max(1, Math.ceil(size / 64)))
    })
  }

  it('encrypting the same bytes twice gives different archives (fresh nonces)', async () => {
    const data = randomBytes(100)
    assert.notDeepEqual(await seal(data, 64), await seal(data, 64))
  })

  it('refuses the archive under another key or another backup id', async () => {
    const archive = await seal(randomBytes(200), 64)
    await assert.rejects(open(archive, randomBytes(32)), { code: 'PLINTH_BACKUP_CORRUPT' })
    await assert.rejects(open(archive, key, '20261206T010000Z-ffffffff'), { code: 'PLINTH_BACKUP_CORRUPT' })
  })

  it('detects a flipped bit at every byte of a small archive', async () => {
    const archive = await seal(randomBytes(150), 64)
    for (let i = 0; i < archive.length; i++) {
      const bad = Buffer.from(archive)
      bad[i]! ^= 0x01
      await assert.rejects(open(bad), { code: 'PLINTH_BACKUP_CORRUPT' }, `flip at byte ${i} went unnoticed`)
    }
  })

  it('detects truncation at every length', async () => {
    const archive = await seal(randomBytes(150), 64)
    for (let n = 0; n < archive.length; n++)
      await assert.rejects(open(archive.subarray(0, n)), { code: 'PLINTH_BACKUP_CORRUPT' }, `cut at ${n}`)
  })

  it('detects dropped, swapped, duplicated and re-ordered records, and bytes after the final one', async () => {
    const archive = await seal(randomBytes(64 * 4 + 10), 64)
    const r = records(archive)
    const head = archive.subarray(0, HEADER_BYTES)
    const rec = (i: number) => archive.subarray(r[i]!.start, r[i]!.end)
    const variants: Record<string, Buffer> = {
      'dropped middle record': Buffer.concat([head, rec(0), rec(2), rec(3), rec(4)]),
      'dropped final record': Buffer.concat([head, rec(0), rec(1), rec(2), rec(3)]),
      'swapped records': Buffer.concat([head, rec(1), rec(0), rec(2), rec(3), rec(4)]),
      'duplicated record': Buffer.concat([head, rec(0), rec(0), rec(1), rec(2), rec(3), rec(4)]),
      'final record moved first': Buffer.concat([head, rec(4), rec(0), rec(1), rec(2), rec(3)]),
      'final record repeated': Buffer.concat([archive, rec(4)]),
      'garbage appended': Buffer.concat([archive, Buffer.from('x')]),
    }
    assert.equal(r.length, 5)
    for (const [name, bad] of Object.entries(variants))
      await assert.rejects(open(bad), { code: 'PLINTH_BACKUP_CORRUPT' }, name)
  })
})

describe('manifest seals', () => {
  it('canonical JSON does not depend on key order', () => {
    assert.equal(canonicalJson({ b: 1, a: [{ d: 2, c: 3 }] }), canonicalJson({ a: [{ c: 3, d: 2 }], b: 1 }))
  })
  it('a seal holds for its body only', () => {
    const k = randomBytes(32)
    const body = { id: 'x', rowCounts: { 'public.users': 3 } }
    const s = sealOf(k, 'manifest', body)
    assert.equal(sealHolds(k, 'manifest', body, s), true)
    assert.equal(sealHolds(k, 'manifest', { ...body, rowCounts: { 'public.users': 4 } }, s), false)
    assert.equal(sealHolds(k, 'verification', body, s), false)
    assert.equal(sealHolds(randomBytes(32), 'manifest', body, s), false)
    assert.equal(sealHolds(k, 'manifest', body, 'nonsense'), false)
  })
})
