import { createCipheriv, createDecipheriv, createHmac, hkdfSync, randomBytes } from 'node:crypto'
import { linkSync, mkdirSync, readFileSync, statSync, unlinkSync, writeFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import type { Logger } from 'pino'
import { decodeMasterKey } from '../../config/config.schema.ts'
import type { PlinthEnv } from '../../config/config-types.ts'
import { PlinthError } from '../../shared/errors.ts'

/**
 * Encrypts small values stored in the database (TOTP secrets, webhook secrets) with
 * AES-256-GCM, and decrypts them with the key that encrypted them.
 *
 * Format of a ciphertext (version 1), an ASCII string safe in any text column:
 *
 *     v1.<keyId>.<payload>
 *
 * - `v1`: the format version. Anything else is refused, so a later format can coexist.
 * - `keyId`: 16 lowercase hex characters, the first 8 bytes of HMAC-SHA256(key, "plinth-key-id").
 *   Stable for a key, and reveals nothing about it. It names the key to decrypt with, so several
 *   keys can be in use at once while values are re-encrypted (rotation).
 * - `payload`: base64url, without padding, of `iv (12 random bytes) | ciphertext | tag (16 bytes)`.
 *
 * The GCM additional data is `plinth.v1.<keyId>.<aad>`: the version and key id are authenticated,
 * and `aad` (chosen by the caller) binds the value to its place, e.g.
 * `totp_credentials.secret:<userId>`. A ciphertext copied into another row, or another column,
 * does not decrypt there.
 */
export interface Keyring {
  /** Id of the active key, the one `encrypt` uses. */
  readonly keyId: string
  /** Ids of every key this keyring can decrypt with, the active one first. */
  readonly keyIds: readonly string[]
  /**
   * Encrypts `plaintext` (UTF-8 for a string) bound to `aad`, with the active key and a fresh
   * random IV: encrypting the same value twice gives different ciphertexts.
   * @param aad where the value lives, e.g. `totp_credentials.secret:<userId>`; must not be empty.
   */
  encrypt(plaintext: string | Uint8Array, aad: string): string
  /**
   * The plaintext of `ciphertext`, which must have been encrypted with the same `aad`.
   * @throws PlinthError `PLINTH_CRYPTO_DECRYPT_FAILED` when the value is malformed, of an unknown
   *   version, names a key this keyring lacks, was altered, or is bound to another `aad`. The
   *   message never holds key material, plaintext or the aad.
   */
  decrypt(ciphertext: string, aad: string): Buffer
  /** `decrypt`, as a UTF-8 string. */
  decryptString(ciphertext: string, aad: string): string
  /**
   * The key id a ciphertext names, or undefined when it is not a version 1 ciphertext. Rotation
   * uses it to find values that are not under the active key yet. Does not authenticate.
   */
  keyIdOf(ciphertext: string): string | undefined
  /**
   * `decrypt`, except that a ciphertext naming a key this keyring does not know makes it reload its
   * keys once first (another replica may have rotated to a key this one has not loaded yet). Use it
   * wherever a request reads a stored value.
   */
  decryptAsync(ciphertext: string, aad: string): Promise<Buffer>
  /** `decryptAsync`, as a UTF-8 string. */
  decryptStringAsync(ciphertext: string, aad: string): Promise<string>
  /** Reloads the keys from where they are kept (the `encryption_keys` table); a no-op for a fixed keyring. */
  refresh(): Promise<void>
}

const VERSION = 'v1'
const IV_BYTES = 12
const TAG_BYTES = 16
const KEY_BYTES = 32
const KEY_ID = /^[0-9a-f]{16}$/
const PAYLOAD = /^[A-Za-z0-9_-]+$/

/** Stable, non-reversible id of a key: the first 8 bytes of HMAC-SHA256(key, "plinth-key-id"), hex. */
export function keyIdFor(key: Uint8Array): string {
  return createHmac('sha256', key).update('plinth-key-id').digest().subarray(0, 8).toString('hex')
}

/**
 * The key values were encrypted with before data keys existed, derived from the master key
 * (HKDF-SHA256, info "plinth value encryption v1"). It is now the *legacy* key: values under it stay
 * readable until a completed rotation moves them to a data key (see src/modules/keys).
 */
export function deriveValueKey(masterKey: Uint8Array): Buffer {
  return Buffer.from(
    hkdfSync('sha256', masterKey, new Uint8Array(0), 'plinth value encryption v1', KEY_BYTES),
  )
}

/**
 * The key-encryption key that wraps data keys, derived from the master key (HKDF-SHA256, info
 * "plinth key wrapping v1"): distinct from the legacy value key, so the master key itself never
 * encrypts anything.
 */
export function deriveWrappingKey(masterKey: Uint8Array): Buffer {
  return Buffer.from(hkdfSync('sha256', masterKey, new Uint8Array(0), 'plinth key wrapping v1', KEY_BYTES))
}

/**
 * The key id a version 1 ciphertext names, or undefined when it is not one. Does not authenticate:
 * it says which key to try, not that the value is genuine.
 */
export function ciphertextKeyId(ciphertext: string): string | undefined {
  if (typeof ciphertext !== 'string') return undefined
  const parts = ciphertext.split('.')
  return parts.length === 3 && parts[0] === VERSION && KEY_ID.test(parts[1]!) ? parts[1] : undefined
}

function decryptFailed(reason: string): PlinthError {
  return new PlinthError('PLINTH_CRYPTO_DECRYPT_FAILED', `Could not decrypt a stored value: ${reason}.`)
}

function assertAad(aad: string): void {
  if (typeof aad !== 'string' || aad === '') {
    throw new TypeError('keyring: aad must be a non-empty string naming where the value lives')
  }
}

function additionalData(keyId: string, aad: string): Buffer {
  return Buffer.from(`plinth.${VERSION}.${keyId}.${aad}`, 'utf8')
}

/**
 * A keyring over raw 32-byte AES keys: the first encrypts, all of them decrypt the values they
 * encrypted. This is the seam for rotation: put the new key first and the old ones after it.
 *
 * @example
 * const ring = keyringFromKeys([newKey, oldKey])
 * const moved = ring.encrypt(ring.decrypt(stored, aad), aad) // re-encrypted under newKey
 */
export function keyringFromKeys(keys: readonly Uint8Array[]): Keyring {
  if (keys.length === 0) throw new TypeError('keyring: at least one key is required')
  const byId = new Map<string, Buffer>()
  for (const key of keys) {
    if (key.length !== KEY_BYTES) throw new TypeError(`keyring: keys must be ${KEY_BYTES} bytes`)
    // Copied, so that a caller wiping or reusing its buffer cannot change the keyring.
    byId.set(keyIdFor(key), Buffer.from(key))
  }
  const [activeId, activeKey] = byId.entries().next().value as [string, Buffer]

  const keyIdOf = ciphertextKeyId
  function decrypt(ciphertext: string, aad: string): Buffer {
    assertAad(aad)
    if (typeof ciphertext !== 'string') throw decryptFailed('the value is not a string')
    const parts = ciphertext.split('.')
    if (parts.length !== 3) throw decryptFailed('the value is not in the keyring format')
    const [version, keyId, payload] = parts as [string, string, string]
    if (version !== VERSION) throw decryptFailed('unknown format version')
    if (!KEY_ID.test(keyId)) throw decryptFailed('the key id is malformed')
    const key = byId.get(keyId)
    if (!key) throw decryptFailed(`no key with id ${keyId} is configured (was PLINTH_MASTER_KEY changed?)`)
    if (!PAYLOAD.test(payload)) throw decryptFailed('the payload is not base64url')
    const bytes = Buffer.from(payload, 'base64url')
    // Re-encoding must give the same text: otherwise an altered trailing character could decode
    // to the same bytes, and the value would not be exactly what was stored.
    if (bytes.length < IV_BYTES + TAG_BYTES || bytes.toString('base64url') !== payload) {
      throw decryptFailed('the payload is truncated or malformed')
    }
    const iv = bytes.subarray(0, IV_BYTES)
    const tag = bytes.subarray(bytes.length - TAG_BYTES)
    const body = bytes.subarray(IV_BYTES, bytes.length - TAG_BYTES)
    try {
      const decipher = createDecipheriv('aes-256-gcm', key, iv, { authTagLength: TAG_BYTES })
      decipher.setAAD(additionalData(keyId, aad))
      decipher.setAuthTag(tag)
      return Buffer.concat([decipher.update(body), decipher.final()])
    } catch {
      throw decryptFailed(
        'authentication failed (the value was altered, moved from another row, or the key differs)',
      )
    }
  }

  const decryptString = (ciphertext: string, aad: string) => decrypt(ciphertext, aad).toString('utf8')
  return Object.freeze({
    keyId: activeId,
    keyIds: Object.freeze([...byId.keys()]),
    encrypt(plaintext: string | Uint8Array, aad: string): string {
      assertAad(aad)
      const iv = randomBytes(IV_BYTES)
      const cipher = createCipheriv('aes-256-gcm', activeKey, iv, { authTagLength: TAG_BYTES })
      cipher.setAAD(additionalData(activeId, aad))
      const data = typeof plaintext === 'string' ? Buffer.from(plaintext, 'utf8') : plaintext
      const body = Buffer.concat([cipher.update(data), cipher.final()])
      const payload = Buffer.concat([iv, body, cipher.getAuthTag()]).toString('base64url')
      return `${VERSION}.${activeId}.${payload}`
    },
    decrypt,
    decryptString,
    keyIdOf,
    decryptAsync: async (ciphertext: string, aad: string) => decrypt(ciphertext, aad),
    decryptStringAsync: async (ciphertext: string, aad: string) => decryptString(ciphertext, aad),
    refresh: async () => {},
  })
}

export interface KeyringOptions {
  /** `PLINTH_MASTER_KEY`: 32 bytes, or their base64. Unset: see `createKeyring`. */
  masterKey?: Buffer | string | undefined
  /** `PLINTH_DATA_DIR`; `memory://` keeps a generated development key in memory. */
  dataDir: string
  env: PlinthEnv
  logger: Pick<Logger, 'warn' | 'info'>
}

const IN_MEMORY = 'memory://'
let memoryKey: Buffer | undefined

/**
 * The legacy keyring: the one key derived from `PLINTH_MASTER_KEY` that values were encrypted with
 * before data keys (src/modules/keys). The service now encrypts under data keys and keeps this key
 * only to decrypt older values until a rotation retires it; it is what `ctx.keyring` answers with
 * while the `encryption_keys` table does not exist yet.
 *
 * Without a master key (see `resolveMasterKey`): staging and production throw (configuration refuses this already; this
 * is defence in depth). Development and test generate 32 random bytes once into
 * `<dataDir>/master.key` (mode 0600) and reuse them on every start, with a loud warning; with
 * `dataDir` `memory://` the generated key lives in memory, one per process. Losing that file makes
 * everything it encrypted unreadable, exactly like losing the master key.
 *
 * @example
 * const keyring = createKeyring({ masterKey: config.masterKey, dataDir: config.dataDir, env: config.env, logger })
 * const stored = keyring.encrypt(secret, `totp_credentials.secret:${userId}`)
 * const secret = keyring.decryptString(stored, `totp_credentials.secret:${userId}`)
 */
export function createKeyring(options: KeyringOptions): Keyring {
  return keyringFromKeys([deriveValueKey(resolveMasterKey(options))])
}

/**
 * The master key's 32 bytes: `PLINTH_MASTER_KEY` when set; otherwise the development key (generated
 * into the data directory with a loud warning), or a refusal in staging and production.
 */
export function resolveMasterKey(options: KeyringOptions): Buffer {
  return options.masterKey === undefined ? developmentMasterKey(options) : toMasterKey(options.masterKey)
}

function toMasterKey(value: Buffer | string): Buffer {
  const key =
    typeof value === 'string' ? decodeMasterKey(value) : value.length === KEY_BYTES ? value : undefined
  if (!key) {
    throw new PlinthError(
      'PLINTH_CONFIG_INVALID',
      'PLINTH_MASTER_KEY is not base64 of exactly 32 bytes: generate one with `openssl rand -base64 32`.',
    )
  }
  return key
}

function developmentMasterKey({ dataDir, env, logger }: KeyringOptions): Buffer {
  if (env !== 'development' && env !== 'test') {
    throw new PlinthError(
      'PLINTH_CONFIG_INVALID',
      `PLINTH_MASTER_KEY is required in ${env}: set it (or PLINTH_MASTER_KEY_FILE) to base64 of 32 random bytes, e.g. \`openssl rand -base64 32\`.`,
    )
  }
  if (dataDir === IN_MEMORY) {
    if (!memoryKey) {
      memoryKey = randomBytes(KEY_BYTES)
      logger.warn(
        { env },
        'generated an in-memory development master key: values encrypted with it are unreadable after exit; set PLINTH_MASTER_KEY in production',
      )
    }
    return memoryKey
  }
  const path = join(resolve(dataDir), 'master.key')
  const existing = readKeyFile(path, logger)
  if (existing) return existing
  const created = createKeyFile(path)
  if (created.generated) {
    logger.warn(
      { path, env },
      'generated a development master key: stored secrets are encrypted with the key in this file, keep it with the data; set PLINTH_MASTER_KEY in production',
    )
  }
  return created.key
}

function readKeyFile(path: string, logger: KeyringOptions['logger']): Buffer | undefined {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw new PlinthError(
      'PLINTH_CONFIG_INVALID',
      `Cannot read the development master key ${path} (${(err as NodeJS.ErrnoException).code}): fix its permissions, or set PLINTH_MASTER_KEY.`,
    )
  }
  const key = decodeMasterKey(text)
  if (!key) {
    throw new PlinthError(
      'PLINTH_CONFIG_INVALID',
      `The development master key ${path} is not base64 of 32 bytes: restore it, or delete it to generate a new one (values encrypted with the old key become unreadable).`,
    )
  }
  if (process.platform !== 'win32' && (statSync(path).mode & 0o077) !== 0) {
    logger.warn({ path }, 'the development master key file is readable by other users: chmod 600 it')
  }
  logger.info({ path }, 'using the development master key from the data directory')
  return key
}

/**
 * Writes a new key to a private temporary file, then hard-links it into place: `link` fails when
 * the file exists, so of two processes starting at once exactly one key wins, and nobody ever
 * reads a half-written file.
 */
function createKeyFile(path: string): { key: Buffer; generated: boolean } {
  mkdirSync(dirname(path), { recursive: true })
  const key = randomBytes(KEY_BYTES)
  const temp = `${path}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`
  writeFileSync(temp, `${key.toString('base64')}\n`, { mode: 0o600, flag: 'wx' })
  try {
    linkSync(temp, path)
    return { key, generated: true }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
    const theirs = decodeMasterKey(readFileSync(path, 'utf8'))
    if (!theirs)
      throw new PlinthError('PLINTH_CONFIG_INVALID', `The development master key ${path} is invalid.`)
    return { key: theirs, generated: false }
  } finally {
    unlinkSync(temp)
  }
}
