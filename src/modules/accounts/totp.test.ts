import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { generateSync } from 'otplib'
import {
  createTotpSecret,
  generateTotp,
  otpauthUri,
  qrCodeSvg,
  TOTP_PERIOD,
  totpStep,
  verifyTotp,
} from './totp.ts'

// RFC 6238 appendix B: the SHA-1 seed is the ASCII "12345678901234567890", here in base32.
const RFC_SECRET = 'GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ'
const RFC_VECTORS = [
  { time: 59, totp: '94287082' },
  { time: 1111111109, totp: '07081804' },
  { time: 1111111111, totp: '14050471' },
  { time: 1234567890, totp: '89005924' },
  { time: 2000000000, totp: '69279037' },
  { time: 20000000000, totp: '65353130' },
]

const secret = createTotpSecret()
// The middle of a step, so that ±1 step in milliseconds never crosses a boundary by accident.
const NOW = (55_000_000 * TOTP_PERIOD + 15) * 1000
const STEP = totpStep(NOW)
const at = (offset: number) => NOW + offset * TOTP_PERIOD * 1000
const codeAt = (offset: number) => generateTotp(secret, at(offset))

describe('TOTP codes', () => {
  it('match the RFC 6238 SHA-1 test vectors (8 digits) and their 6-digit truncation', () => {
    for (const { time, totp } of RFC_VECTORS) {
      assert.equal(
        generateSync({ secret: RFC_SECRET, epoch: time, digits: 8 }),
        totp,
        `8 digits at T=${time}`,
      )
      // Truncation is the value modulo 10^digits: the 6-digit code is the last 6 of the 8.
      assert.equal(generateTotp(RFC_SECRET, time * 1000), totp.slice(-6), `6 digits at T=${time}`)
      const verdict = verifyTotp({
        secret: RFC_SECRET,
        code: totp.slice(-6),
        lastUsedStep: null,
        now: time * 1000,
      })
      assert.deepEqual(verdict, { ok: true, step: Math.floor(time / 30) })
    }
  })

  it('creates distinct 160-bit base32 secrets', () => {
    const a = createTotpSecret()
    assert.match(a, /^[A-Z2-7]{32}$/)
    assert.notEqual(a, createTotpSecret())
  })

  it('counts 30-second steps from the epoch', () => {
    assert.equal(totpStep(0), 0)
    assert.equal(totpStep(29_999), 0)
    assert.equal(totpStep(30_000), 1)
    assert.equal(STEP, 55_000_000)
  })
})

describe('verifyTotp', () => {
  it('accepts the current step and one step either side, reporting the step matched', () => {
    for (const offset of [-1, 0, 1]) {
      assert.deepEqual(verifyTotp({ secret, code: codeAt(offset), lastUsedStep: null, now: NOW }), {
        ok: true,
        step: STEP + offset,
      })
    }
  })

  it('refuses codes two or more steps away, and codes from another secret', () => {
    for (const offset of [-3, -2, 2, 3]) {
      const code = codeAt(offset)
      // Skip the rare code that coincides with one inside the window.
      if ([-1, 0, 1].some((o) => codeAt(o) === code)) continue
      assert.deepEqual(verifyTotp({ secret, code, lastUsedStep: null, now: NOW }), {
        ok: false,
        reason: 'invalid',
      })
    }
    const other = generateTotp(createTotpSecret(), NOW)
    if (![-1, 0, 1].some((o) => codeAt(o) === other)) {
      assert.deepEqual(verifyTotp({ secret, code: other, lastUsedStep: null, now: NOW }), {
        ok: false,
        reason: 'invalid',
      })
    }
  })

  it('accepts a code once: the same code again is a replay, even a few seconds later', () => {
    const code = codeAt(0)
    const first = verifyTotp({ secret, code, lastUsedStep: null, now: NOW })
    assert.ok(first.ok)
    for (const now of [NOW, NOW + 10_000, at(1)]) {
      assert.deepEqual(verifyTotp({ secret, code, lastUsedStep: first.step, now }), {
        ok: false,
        reason: 'replayed',
      })
    }
  })

  it('refuses an older step after a newer one was used, and accepts a later one', () => {
    const newer = verifyTotp({ secret, code: codeAt(1), lastUsedStep: null, now: NOW })
    assert.deepEqual(newer, { ok: true, step: STEP + 1 })
    for (const offset of [-1, 0]) {
      assert.deepEqual(verifyTotp({ secret, code: codeAt(offset), lastUsedStep: newer.step, now: NOW }), {
        ok: false,
        reason: 'replayed',
      })
    }
    assert.deepEqual(verifyTotp({ secret, code: codeAt(2), lastUsedStep: newer.step, now: at(2) }), {
      ok: true,
      step: STEP + 2,
    })
  })

  it('does not throw when the last used step is ahead of the clock (it moved back)', () => {
    assert.deepEqual(verifyTotp({ secret, code: codeAt(0), lastUsedStep: STEP + 100, now: NOW }), {
      ok: false,
      reason: 'replayed',
    })
  })

  it('reports malformed input without throwing, and ignores the spaces apps display', () => {
    const code = codeAt(0)
    for (const bad of ['', '12345', '1234567', '12345a', '１２３４５６', '12-34-56', ' ', `${code}\n0`]) {
      assert.deepEqual(verifyTotp({ secret, code: bad, lastUsedStep: null, now: NOW }), {
        ok: false,
        reason: 'malformed',
      })
    }
    for (const bad of [undefined, null, 123456, { code }] as unknown as string[]) {
      assert.deepEqual(verifyTotp({ secret, code: bad, lastUsedStep: null, now: NOW }), {
        ok: false,
        reason: 'malformed',
      })
    }
    const spaced = `${code.slice(0, 3)} ${code.slice(3)}`
    assert.deepEqual(verifyTotp({ secret, code: ` ${spaced} `, lastUsedStep: null, now: NOW }), {
      ok: true,
      step: STEP,
    })
  })

  it('uses the current time when now is omitted', () => {
    const result = verifyTotp({ secret, code: generateTotp(secret), lastUsedStep: null })
    assert.ok(result.ok)
    assert.ok(Math.abs(result.step - totpStep()) <= 1)
  })
})

describe('enrolment', () => {
  it('builds an otpauth://totp URI with the issuer, the account and the secret', () => {
    const uri = otpauthUri({ secret: RFC_SECRET, accountName: 'ada+mfa@example.com' })
    const url = new URL(uri)
    assert.equal(url.protocol, 'otpauth:')
    assert.equal(url.host, 'totp')
    assert.equal(decodeURIComponent(url.pathname), '/Plinth:ada+mfa@example.com')
    assert.equal(url.searchParams.get('secret'), RFC_SECRET)
    assert.equal(url.searchParams.get('issuer'), 'Plinth')
    for (const [name, value] of [
      ['algorithm', 'SHA1'],
      ['digits', '6'],
      ['period', '30'],
    ]) {
      const given = url.searchParams.get(name!)
      assert.ok(given === null || given.toUpperCase() === value, `${name}=${given}`)
    }
    const custom = new URL(otpauthUri({ secret: RFC_SECRET, accountName: 'a@b.c', issuer: 'Acme Co' }))
    assert.equal(custom.searchParams.get('issuer'), 'Acme Co')
  })

  it('renders the URI as an SVG QR code', async () => {
    const svg = await qrCodeSvg(otpauthUri({ secret, accountName: 'ada@example.com' }))
    assert.match(svg, /^<svg [^>]*xmlns="http:\/\/www\.w3\.org\/2000\/svg"/)
    assert.match(svg.trim(), /<\/svg>$/)
    const path = /<path [^>]*d="([^"]+)"[^>]*\/>\s*<\/svg>/.exec(svg)?.[1] ?? ''
    assert.ok(path.length > 500, 'the modules are drawn as path data')
    assert.ok(!svg.includes(secret), 'the secret is only in the modules, not in text')
    const other = await qrCodeSvg(otpauthUri({ secret: createTotpSecret(), accountName: 'ada@example.com' }))
    assert.notEqual(other, svg)
  })
})
