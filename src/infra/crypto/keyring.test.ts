import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import { isPlinthError } from '../../shared/errors.ts'
import {
  ciphertextKeyId,
  createKeyring,
  deriveValueKey,
  deriveWrappingKey,
  type KeyringOptions,
  keyIdFor,
  keyringFromKeys,
  resolveMasterKey,
} from './keyring.ts'

const AAD = 'totp_credentials.secret:user-1'
const SECRET_TEXT = 'JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP'

interface Logged {
  level: 'warn' | 'info'
  obj: object
  msg: string
}
function recorder() {
  const lines: Logged[] = []
  const logger = {
    warn: (obj: object, msg: string) => lines.push({ level: 'warn', obj, msg }),
    info: (obj: object, msg: string) => lines.push({ level: 'info', obj, msg }),
  } as unknown as KeyringOptions['logger']
  return { lines, logger }
}

/** Asserts `fn` throws PLINTH_CRYPTO_DECRYPT_FAILED and returns the error's serialised form. */
function decryptFails(fn: () => unknown): string {
  let caught: unknown
  try {
    fn()
  } catch (err) {
    caught = err
  }
  assert.ok(isPlinthError(caught), `expected a PlinthError, got ${caught}`)
  assert.equal(caught.code, 'PLINTH_CRYPTO_DECRYPT_FAILED')
  assert.equal(caught.status, 500)
  return `${caught.message}\n${caught.stack}\n${JSON.stringify(caught)}`
}

/** A copy of `text` with the character at `i` changed to another one of the same alphabet. */
function flip(text: string, i: number): string {
  const c = text[i]!
  const other = c === 'A' ? 'B' : c === '0' ? '1' : c === '.' ? '_' : c === 'v' ? 'w' : 'A'
  return text.slice(0, i) + other + text.slice(i + 1)
}

describe('keyring', () => {
  const key = randomBytes(32)
  const ring = keyringFromKeys([key])

  it('round-trips strings and bytes, with a fresh IV each time', () => {
    const a = ring.encrypt(SECRET_TEXT, AAD)
    const b = ring.encrypt(SECRET_TEXT, AAD)
    assert.notEqual(a, b)
    assert.equal(ring.decryptString(a, AAD), SECRET_TEXT)
    assert.equal(ring.decryptString(b, AAD), SECRET_TEXT)
    const bytes = randomBytes(100)
    assert.deepEqual(ring.decrypt(ring.encrypt(bytes, AAD), AAD), bytes)
    assert.equal(ring.decryptString(ring.encrypt('', AAD), AAD), '')
    assert.equal(ring.decryptString(ring.encrypt('ünïcødé ✓', AAD), AAD), 'ünïcødé ✓')
  })

  it('writes v1.<keyId>.<base64url>, naming a key id derived from the key', () => {
    const text = ring.encrypt(SECRET_TEXT, AAD)
    assert.match(text, /^v1\.[0-9a-f]{16}\.[A-Za-z0-9_-]+$/)
    assert.equal(ring.keyId, keyIdFor(key))
    assert.equal(ring.keyIdOf(text), ring.keyId)
    assert.equal(keyringFromKeys([Buffer.from(key)]).keyId, ring.keyId, 'the id is stable')
    assert.ok(!key.toString('hex').includes(ring.keyId), 'the id is not a slice of the key')
    assert.equal(ring.keyIdOf('v2.0123456789abcdef.AAAA'), undefined)
    // 12-byte IV + 16-byte tag around the plaintext, in base64url.
    assert.equal(Buffer.from(text.split('.')[2]!, 'base64url').length, 12 + SECRET_TEXT.length + 16)
  })

  it('refuses a ciphertext moved to another row or column (the AAD binds it)', () => {
    const stored = ring.encrypt(SECRET_TEXT, AAD)
    for (const other of ['totp_credentials.secret:user-2', 'api_keys.secret:user-1', `${AAD} `]) {
      decryptFails(() => ring.decrypt(stored, other))
    }
    assert.throws(() => ring.encrypt(SECRET_TEXT, ''), TypeError)
    assert.throws(() => ring.decrypt(stored, ''), TypeError)
  })

  it('refuses a ciphertext with any single character altered', () => {
    const stored = ring.encrypt('short secret', AAD)
    for (let i = 0; i < stored.length; i++) decryptFails(() => ring.decrypt(flip(stored, i), AAD))
    // The last character carries 4 unused bits: flipping one decodes to the same bytes, yet the
    // stored text differs from what was written, so it is refused too.
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
    const unusedBit = alphabet[alphabet.indexOf(stored.at(-1)!) ^ 1]!
    decryptFails(() => ring.decrypt(stored.slice(0, -1) + unusedBit, AAD))
    decryptFails(() => ring.decrypt(stored.slice(0, -1), AAD))
    decryptFails(() => ring.decrypt(`${stored}A`, AAD))
  })

  it('refuses malformed values, unknown versions and unknown key ids', () => {
    const stored = ring.encrypt(SECRET_TEXT, AAD)
    const [, keyId, payload] = stored.split('.') as [string, string, string]
    const cases = {
      empty: '',
      'not the format': 'hello',
      'too many parts': `${stored}.x`,
      'version 2': `v2.${keyId}.${payload}`,
      'upper-case key id': `v1.${keyId.toUpperCase()}.${payload}`,
      'unknown key id': `v1.0000000000000000.${payload}`,
      'standard base64 payload': `v1.${keyId}.${payload}+/`,
      'payload too short': `v1.${keyId}.AAAA`,
    }
    for (const [name, value] of Object.entries(cases)) {
      const shown = decryptFails(() => ring.decrypt(value, AAD))
      if (name === 'unknown key id') assert.match(shown, /no key with id 0000000000000000/)
    }
  })

  it('encrypts with the newest key and still decrypts old values by the key id they name', () => {
    const oldKey = randomBytes(32)
    const newKey = randomBytes(32)
    const before = keyringFromKeys([oldKey])
    const oldValue = before.encrypt('old secret', AAD)

    const rotated = keyringFromKeys([newKey, oldKey])
    assert.deepEqual(rotated.keyIds, [keyIdFor(newKey), keyIdFor(oldKey)])
    const newValue = rotated.encrypt('new secret', AAD)
    assert.equal(rotated.keyIdOf(newValue), keyIdFor(newKey))
    assert.equal(rotated.decryptString(oldValue, AAD), 'old secret')
    assert.equal(rotated.decryptString(newValue, AAD), 'new secret')
    decryptFails(() => before.decrypt(newValue, AAD))
    // Once the old key is dropped, its values no longer decrypt.
    decryptFails(() => keyringFromKeys([newKey]).decrypt(oldValue, AAD))
  })

  it('offers async decryption and a no-op refresh with the same results, for callers of a reloading keyring', async () => {
    const stored = ring.encrypt(SECRET_TEXT, AAD)
    assert.equal(await ring.decryptStringAsync(stored, AAD), SECRET_TEXT)
    assert.deepEqual(await ring.decryptAsync(stored, AAD), Buffer.from(SECRET_TEXT))
    await ring.refresh()
    assert.equal(ring.decryptString(stored, AAD), SECRET_TEXT)
    await assert.rejects(ring.decryptStringAsync(stored, 'totp_credentials.secret:user-2'), {
      code: 'PLINTH_CRYPTO_DECRYPT_FAILED',
    })
    assert.equal(ciphertextKeyId(stored), ring.keyId)
    assert.equal(ciphertextKeyId('v1.XYZ.AAAA'), undefined)
    assert.equal(ciphertextKeyId(42 as unknown as string), undefined)
  })

  it('puts no key material, plaintext or AAD in its errors', () => {
    const stored = ring.encrypt(SECRET_TEXT, AAD)
    const attempts = [
      () => ring.decrypt(stored, 'totp_credentials.secret:user-2'),
      () => ring.decrypt(flip(stored, stored.length - 3), AAD),
      () => keyringFromKeys([randomBytes(32)]).decrypt(stored, AAD),
    ]
    for (const attempt of attempts) {
      const shown = decryptFails(attempt)
      for (const secret of [key.toString('base64'), key.toString('hex'), SECRET_TEXT, 'user-2', AAD]) {
        assert.ok(
          !shown.includes(secret),
          `an error shows ${secret === SECRET_TEXT ? 'the plaintext' : 'a secret'}`,
        )
      }
    }
  })
})

describe('createKeyring', () => {
  const dirs: string[] = []
  const tempDir = () => {
    const dir = mkdtempSync(join(tmpdir(), 'plinth-keyring-'))
    dirs.push(dir)
    return dir
  }
  after(() => {
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true })
  })

  it('uses the configured master key, given as base64 or bytes, through a derived key', () => {
    const master = randomBytes(32)
    const { logger, lines } = recorder()
    const fromText = createKeyring({
      masterKey: master.toString('base64'),
      dataDir: tempDir(),
      env: 'production',
      logger,
    })
    const fromBytes = createKeyring({ masterKey: master, dataDir: 'memory://', env: 'production', logger })
    assert.equal(fromText.keyId, fromBytes.keyId)
    assert.equal(fromText.keyId, keyIdFor(deriveValueKey(master)))
    assert.notEqual(fromText.keyId, keyIdFor(master), 'values are not encrypted with the master key itself')
    assert.equal(fromBytes.decryptString(fromText.encrypt('x', AAD), AAD), 'x')
    assert.deepEqual(lines, [])
  })

  it('derives distinct keys from the master key for values (legacy) and for wrapping data keys', () => {
    const master = randomBytes(32)
    const options = {
      masterKey: master,
      dataDir: 'memory://',
      env: 'production',
      logger: recorder().logger,
    } as const
    assert.deepEqual(resolveMasterKey(options), master)
    assert.deepEqual(resolveMasterKey({ ...options, masterKey: master.toString('base64') }), master)
    const ids = new Set([
      keyIdFor(master),
      keyIdFor(deriveValueKey(master)),
      keyIdFor(deriveWrappingKey(master)),
    ])
    assert.equal(ids.size, 3)
    assert.deepEqual(
      deriveWrappingKey(Buffer.from(master)),
      deriveWrappingKey(master),
      'derivation is stable',
    )
  })

  it('refuses a master key that is not 32 bytes, without echoing it', () => {
    const { logger } = recorder()
    for (const masterKey of ['dG9vLXNob3J0', randomBytes(31), `${randomBytes(32).toString('base64')}x`]) {
      assert.throws(
        () => createKeyring({ masterKey, dataDir: 'memory://', env: 'development', logger }),
        (err: unknown) => {
          assert.ok(isPlinthError(err) && err.code === 'PLINTH_CONFIG_INVALID')
          assert.ok(typeof masterKey !== 'string' || !err.message.includes(masterKey))
          assert.match(err.message, /openssl rand -base64 32/)
          return true
        },
      )
    }
  })

  for (const env of ['production', 'staging'] as const) {
    it(`refuses to run in ${env} without a master key, and writes no key file`, () => {
      const dir = tempDir()
      assert.throws(
        () => createKeyring({ dataDir: dir, env, logger: recorder().logger }),
        (err: unknown) => isPlinthError(err) && /PLINTH_MASTER_KEY is required in/.test(err.message),
      )
      assert.throws(() => statSync(join(dir, 'master.key')), { code: 'ENOENT' })
    })
  }

  it('generates a development key into <dataDir>/master.key (0600) once, warns, and reuses it', () => {
    const dir = join(tempDir(), 'nested', 'data')
    const first = recorder()
    const a = createKeyring({ dataDir: dir, env: 'development', logger: first.logger })
    const file = join(dir, 'master.key')
    if (process.platform !== 'win32') assert.equal(statSync(file).mode & 0o777, 0o600)
    assert.equal(Buffer.from(readFileSync(file, 'utf8').trim(), 'base64').length, 32)
    const warning = first.lines.find((l) => l.level === 'warn')
    assert.match(
      warning?.msg ?? '',
      /generated a development master key.*set PLINTH_MASTER_KEY in production/,
    )

    const second = recorder()
    const b = createKeyring({ dataDir: dir, env: 'test', logger: second.logger })
    assert.equal(b.keyId, a.keyId)
    assert.equal(b.decryptString(a.encrypt(SECRET_TEXT, AAD), AAD), SECRET_TEXT)
    assert.ok(!second.lines.some((l) => /generated/.test(l.msg)), 'no second generation')
    assert.ok(!JSON.stringify([...first.lines, ...second.lines]).includes(readFileSync(file, 'utf8').trim()))
  })

  it('refuses a damaged development key file instead of replacing it', () => {
    const dir = tempDir()
    writeFileSync(join(dir, 'master.key'), 'not a key\n', { mode: 0o600 })
    assert.throws(
      () => createKeyring({ dataDir: dir, env: 'development', logger: recorder().logger }),
      (err: unknown) =>
        isPlinthError(err) && err.code === 'PLINTH_CONFIG_INVALID' && /restore it/.test(err.message),
    )
    assert.equal(readFileSync(join(dir, 'master.key'), 'utf8'), 'not a key\n')
  })

  it('keeps the development key in memory, one per process, with dataDir memory://', () => {
    const a = createKeyring({ dataDir: 'memory://', env: 'test', logger: recorder().logger })
    const b = createKeyring({ dataDir: 'memory://', env: 'test', logger: recorder().logger })
    assert.equal(a.keyId, b.keyId)
    assert.equal(b.decryptString(a.encrypt('m', AAD), AAD), 'm')
  })
})
