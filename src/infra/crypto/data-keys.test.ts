import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { describe, it } from 'node:test'
import { isPlinthError } from '../../shared/errors.ts'
import {
  createDataKey,
  legacyKeys,
  unwrapDataKey,
  wrapDataKey,
  wrappingKeyId,
  wrappingKeyIdOf,
} from './data-keys.ts'
import { assertEncryptedColumns, encryptedColumn } from './encrypted-column.ts'
import { deriveValueKey, keyIdFor } from './keyring.ts'

function refusal(fn: () => unknown): string {
  try {
    fn()
  } catch (err) {
    assert.ok(isPlinthError(err), `expected a PlinthError, got ${err}`)
    assert.equal(err.code, 'PLINTH_CONFIG_INVALID')
    return `${err.message}\n${err.stack}`
  }
  assert.fail('expected a refusal')
}

describe('data keys', () => {
  const master = randomBytes(32)
  const other = randomBytes(32)

  it('creates random 32-byte keys named by keyIdFor', () => {
    const a = createDataKey()
    const b = createDataKey()
    assert.equal(a.key.length, 32)
    assert.equal(a.id, keyIdFor(a.key))
    assert.notEqual(a.id, b.id)
  })

  it('wraps a data key under the master key, naming the wrapping key, and unwraps it', () => {
    const { id, key } = createDataKey()
    const wrapped = wrapDataKey(master, id, key)
    assert.match(wrapped, /^v1\.[0-9a-f]{16}\.[A-Za-z0-9_-]+$/)
    assert.equal(wrappingKeyIdOf(wrapped), wrappingKeyId(master))
    assert.ok(!wrapped.includes(key.toString('base64url')) && !wrapped.includes(key.toString('hex')))
    assert.deepEqual(unwrapDataKey({ current: master }, id, wrapped), key)
  })

  it('unwraps a key wrapped by the previous master key while both are configured', () => {
    const { id, key } = createDataKey()
    const wrapped = wrapDataKey(other, id, key)
    assert.deepEqual(unwrapDataKey({ current: master, previous: other }, id, wrapped), key)
    const shown = refusal(() => unwrapDataKey({ current: master }, id, wrapped))
    assert.match(shown, new RegExp(`data key ${id} is wrapped under another master key`))
    assert.match(shown, /PLINTH_MASTER_KEY_PREVIOUS.*plinth keys rewrap/)
    for (const secret of [master, other, key])
      for (const enc of ['base64', 'hex'] as const) assert.ok(!shown.includes(secret.toString(enc)))
  })

  it('names the real cause when PLINTH_MASTER_KEY was never set and another data directory made the keys', () => {
    const { id, key } = createDataKey()
    const wrapped = wrapDataKey(other, id, key)
    const shown = refusal(() =>
      unwrapDataKey({ current: master, generatedIn: '/srv/b/master.key' }, id, wrapped),
    )
    assert.doesNotMatch(shown, /was PLINTH_MASTER_KEY changed/)
    assert.match(shown, /PLINTH_MASTER_KEY is not set/)
    assert.match(shown, /\/srv\/b\/master\.key/)
    assert.match(shown, /another data directory/)
    assert.match(shown, /share a database need the same master key/)
  })

  it('refuses a wrapped key copied to another id, altered, or whose key does not match its id', () => {
    const a = createDataKey()
    const b = createDataKey()
    const wrapped = wrapDataKey(master, a.id, a.key)
    assert.match(
      refusal(() => unwrapDataKey({ current: master }, b.id, wrapped)),
      /altered or copied/,
    )
    const altered = `${wrapped.slice(0, -2)}${wrapped.at(-2) === 'A' ? 'B' : 'A'}${wrapped.at(-1)}`
    assert.match(
      refusal(() => unwrapDataKey({ current: master }, a.id, altered)),
      /cannot be unwrapped/,
    )
    // Wrapped correctly for id b, but holding key a: the id is derived from the key, so this is forged.
    const forged = wrapDataKey(master, b.id, a.key)
    assert.match(
      refusal(() => unwrapDataKey({ current: master }, b.id, forged)),
      /does not match its id/,
    )
  })

  it('derives the legacy keys (what values were encrypted with before data keys) from each master key', () => {
    const keys = legacyKeys({ current: master, previous: other })
    assert.deepEqual(
      keys.map((k) => k.id),
      [keyIdFor(deriveValueKey(master)), keyIdFor(deriveValueKey(other))],
    )
    assert.equal(legacyKeys({ current: master }).length, 1)
  })
})

describe('encrypted columns', () => {
  it('builds the AAD from the table and column, or from a given prefix, and the row id', () => {
    const plain = encryptedColumn({ table: 'webhooks', idColumn: 'id', column: 'secret_ciphertext' })
    assert.equal(plain.aad('42'), 'webhooks.secret_ciphertext:42')
    assert.equal(plain.keyIdColumn, undefined)
    const totp = encryptedColumn({
      table: 'totp_credentials',
      idColumn: 'user_id',
      column: 'secret_ciphertext',
      keyIdColumn: 'key_id',
      aadPrefix: 'totp_credentials.secret',
    })
    assert.equal(totp.aad('u-1'), 'totp_credentials.secret:u-1')
    assert.ok(Object.isFrozen(totp))
  })

  it('refuses identifiers that are not plain lower-case SQL names, an empty prefix, and duplicates', () => {
    for (const bad of ['Webhooks', 'a-b', 'x;drop table users', '1abc', ''])
      assert.throws(() => encryptedColumn({ table: bad, idColumn: 'id', column: 'c' }), TypeError)
    assert.throws(
      () => encryptedColumn({ table: 't', idColumn: 'id', column: 'c', aadPrefix: '' }),
      /aadPrefix must not be empty/,
    )
    const a = encryptedColumn({ table: 't', idColumn: 'id', column: 'c' })
    assertEncryptedColumns([a, encryptedColumn({ table: 't', idColumn: 'id', column: 'd' })])
    assert.throws(() => assertEncryptedColumns([a, a]), /t\.c is declared twice/)
    assert.throws(
      () => assertEncryptedColumns([{ ...a, idColumn: 'ID"' }]),
      /"ID"" is not a lower-case SQL identifier/,
    )
  })
})
