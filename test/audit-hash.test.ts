import assert from 'node:assert/strict'
import { createHmac, randomBytes } from 'node:crypto'
import { describe, it } from 'node:test'
import { ERASABLE_FIELDS } from '../src/modules/audit/audit.tables.ts'
import { fieldSalt, fieldSalts, hmacSha256Hex } from '../src/modules/audit/audit-hash.ts'

const reference = (key: Buffer, message: string) => createHmac('sha256', key).update(message).digest('hex')

describe('audit hash: HMAC-SHA256 built from one-shot SHA-256 (the field salts of hash v2)', () => {
  it('matches the RFC 4231 test vectors', () => {
    // Test case 2 (a key shorter than the block) and test case 6 (a 131-byte key, hashed first).
    assert.deepEqual(hmacSha256Hex(Buffer.from('Jefe'), ['what do ya want for nothing?']), [
      '5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843',
    ])
    assert.deepEqual(
      hmacSha256Hex(Buffer.alloc(131, 0xaa), ['Test Using Larger Than Block-Size Key - Hash Key First']),
      ['60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54'],
    )
  })

  it('gives what createHmac gives for every key length around the block size and any message', () => {
    for (const length of [0, 1, 31, 32, 33, 63, 64, 65, 100, 128, 200]) {
      const key = randomBytes(length)
      const messages = ['', 'actor_id', 'é ✓ 𝄞', 'x'.repeat(1000)]
      assert.deepEqual(
        hmacSha256Hex(key, messages),
        messages.map((m) => reference(key, m)),
        `key of ${length} bytes`,
      )
    }
  })

  it('leaves the field salts of sealed rows unchanged (rows sealed before still verify)', () => {
    for (let i = 0; i < 20; i++) {
      const salt = randomBytes(32).toString('hex')
      const salts = fieldSalts({ salt } as Parameters<typeof fieldSalts>[0])
      for (const field of ERASABLE_FIELDS) {
        const expected = reference(Buffer.from(salt, 'hex'), field)
        assert.equal(fieldSalt(salt, field), expected)
        assert.equal(salts?.[field], expected)
      }
    }
    // A salt that is not clean hex (a row changed by hand): decoded the same way createHmac's key was.
    assert.equal(fieldSalt('abz1', 'ip'), reference(Buffer.from('abz1', 'hex'), 'ip'))
  })
})
