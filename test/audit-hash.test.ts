import assert from 'node:assert/strict'
import { createHmac, randomBytes } from 'node:crypto'
import { describe, it } from 'node:test'
import { ERASABLE_FIELDS } from '../src/modules/audit/audit.tables.ts'
import {
  fieldSalt,
  fieldSalts,
  genericDocumentV2,
  type HashedFields,
  hashedDocumentV2,
  hmacSha256Hex,
} from '../src/modules/audit/audit-hash.ts'

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
      // Both orders: each message is written over the one before it in one buffer.
      for (const ordered of [messages, [...messages].reverse()])
        assert.deepEqual(
          hmacSha256Hex(key, ordered),
          ordered.map((m) => reference(key, m)),
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

describe('audit hash: the v2 document written directly', () => {
  const base: HashedFields = {
    id: '42',
    at: new Date('2026-12-06T19:30:00.123Z'),
    actor_type: 'user',
    actor_id: 'u_1',
    actor_token_id: null,
    action: 'widget:created',
    target_type: 'widget',
    target_id: '7',
    outcome: 'success',
    ip: '127.0.0.1',
    user_agent: 'curl/8',
    request_id: 'req-1',
    details: { b: 1, a: [{ d: 2, c: 'x' }] },
    changes: null,
    salt: randomBytes(32).toString('hex'),
    erasure: null,
  }
  const variants: Partial<HashedFields>[] = [
    {},
    { actor_token_id: 'tok_9', request_id: null, target_type: null, outcome: 'failure' },
    { actor_type: 'anonymous', actor_id: null, ip: null, user_agent: 'quote " backslash \\ é ✓ 𝄞 \u2028' },
    { action: 'a:b', target_id: null, details: null, changes: { value: { from: 1, to: 2 } } },
    { id: '9007199254740993', request_id: '\u0001\n' },
    // Not what the database returns: the generic walk decides (undefined members are left out).
    { actor_token_id: undefined, request_id: undefined } as Partial<HashedFields>,
    { outcome: 7 } as unknown as Partial<HashedFields>,
    // An erased row whose kept commitments are not all strings (changed by hand).
    {
      salt: null,
      erasure: { v1: false, pseudonyms: [], salts: {}, commitments: { actor_id: 1, target_id: 'x"y' } },
    } as unknown as Partial<HashedFields>,
    {
      salt: null,
      erasure: {
        v1: false,
        pseudonyms: [],
        salts: {},
        commitments: { actor_id: 1, target_id: 'x"y', ip: 'a', user_agent: 'b', details: 'c', changes: 'd' },
      },
    } as unknown as Partial<HashedFields>,
    {
      salt: null,
      erasure: {
        v1: false,
        pseudonyms: [],
        salts: { ip: 'ab' },
        commitments: { actor_id: 'q"', target_id: '\\', user_agent: 'b', details: 'c', changes: 'd' },
      },
    } as unknown as Partial<HashedFields>,
  ]

  it('is exactly the canonical JSON of the generic document, whatever the row holds', () => {
    for (const [i, variant] of variants.entries()) {
      const row = { ...base, ...variant } as HashedFields
      let generic: string | Error
      try {
        generic = genericDocumentV2(row, String(100 + i), 'f'.repeat(64))
      } catch (err) {
        generic = err as Error
      }
      if (generic instanceof Error) {
        assert.throws(() => hashedDocumentV2(row, String(100 + i), 'f'.repeat(64)), {
          message: generic.message,
        })
        continue
      }
      assert.equal(hashedDocumentV2(row, String(100 + i), 'f'.repeat(64)), generic, `variant ${i}`)
      assert.deepEqual(Object.keys(JSON.parse(generic)), Object.keys(JSON.parse(generic)).sort())
    }
  })
})
