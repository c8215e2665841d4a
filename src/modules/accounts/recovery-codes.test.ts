import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import {
  generateRecoveryCodes,
  hashRecoveryCode,
  matchRecoveryCode,
  normalizeRecoveryCode,
  RECOVERY_CODE_COUNT,
} from './recovery-codes.ts'

const SHAPE = /^[0-9a-hjkmnp-tv-z]{4}(-[0-9a-hjkmnp-tv-z]{4}){3}$/

describe('recovery codes', () => {
  it('generates ten distinct xxxx-xxxx-xxxx-xxxx codes without i, l, o or u, with a hash each', () => {
    const { codes, hashes } = generateRecoveryCodes()
    assert.equal(codes.length, RECOVERY_CODE_COUNT)
    assert.equal(RECOVERY_CODE_COUNT, 10)
    assert.equal(hashes.length, codes.length)
    assert.equal(new Set(codes).size, codes.length)
    for (const code of codes) assert.match(code, SHAPE)
    for (const [i, code] of codes.entries()) assert.equal(matchRecoveryCode(code, hashes), i)
    assert.equal(generateRecoveryCodes(3).codes.length, 3)
    assert.throws(() => generateRecoveryCodes(0), RangeError)
  })

  it('draws every symbol of the 32-letter alphabet (80 random bits per code)', () => {
    const seen = new Set(generateRecoveryCodes(100).codes.join('').replaceAll('-', ''))
    // 1,600 draws from 32 symbols miss one with probability about 32 · (31/32)^1600 < 1e-20.
    assert.equal(seen.size, 32)
    assert.equal(Math.log2(seen.size) * 16, 80)
  })

  it('stores salted SHA-256 hashes that reveal nothing of the code', () => {
    const { codes, hashes } = generateRecoveryCodes(2)
    const [code] = codes as [string]
    const [hash] = hashes as [string]
    assert.match(hash, /^sha256\$[A-Za-z0-9_-]{22}\$[A-Za-z0-9_-]{43}$/)
    assert.ok(!hash.includes(code.replaceAll('-', '')))
    const again = hashRecoveryCode(code)
    assert.notEqual(again, hash, 'a fresh salt each time')
    assert.equal(matchRecoveryCode(code, [again]), 0)
  })

  it('matches what a user types: any case, dashes or spaces, and i/l/o for 1/1/0', () => {
    const code = '7k2m-q9xd-4hvr-t0b1'
    const hashes = ['sha256$bad', hashRecoveryCode(code)]
    for (const typed of [
      code,
      code.toUpperCase(),
      '7k2mq9xd4hvrt0b1',
      ' 7K2M Q9XD 4HVR T0B1 ',
      '7k2m-q9xd-4hvr-tob1',
      '7k2m-q9xd-4hvr-t0bl',
      '7k2m-q9xd-4hvr-TOBI',
    ]) {
      assert.equal(matchRecoveryCode(typed, hashes), 1, typed)
    }
    assert.equal(normalizeRecoveryCode(' 7K2M-Q9XD-4HVR-TOBI '), '7k2mq9xd4hvrt0b1')
  })

  it('matches nothing for another code, a malformed code or a malformed stored hash', () => {
    const { codes, hashes } = generateRecoveryCodes(3)
    const [other] = generateRecoveryCodes(1).codes as [string]
    assert.equal(matchRecoveryCode(other, hashes), -1)
    for (const bad of ['', '123456', `${codes[0]}-0`, 'uuuu-uuuu-uuuu-uuuu', 'x'.repeat(200)]) {
      assert.equal(matchRecoveryCode(bad, hashes), -1, bad)
      assert.equal(normalizeRecoveryCode(bad), undefined, bad)
    }
    assert.equal(matchRecoveryCode(42 as unknown as string, hashes), -1)
    const broken = hashes.map((h) => h.replace('sha256$', 'md5$'))
    assert.equal(matchRecoveryCode(codes[0]!, broken), -1)
    assert.equal(matchRecoveryCode(codes[0]!, []), -1)
    assert.throws(() => hashRecoveryCode('123456'), TypeError)
  })

  it('tells a recovery code from a 6-digit TOTP code', () => {
    assert.equal(normalizeRecoveryCode('123456'), undefined)
    assert.equal(normalizeRecoveryCode('123 456'), undefined)
    assert.ok(normalizeRecoveryCode(generateRecoveryCodes(1).codes[0]!))
  })
})
