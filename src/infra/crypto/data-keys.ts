import { randomBytes } from 'node:crypto'
import { PlinthError } from '../../shared/errors.ts'
import { ciphertextKeyId, deriveValueKey, deriveWrappingKey, keyIdFor, keyringFromKeys } from './keyring.ts'

const KEY_BYTES = 32

/**
 * The master keys a process holds: the current one (`PLINTH_MASTER_KEY`) and, while a master key
 * change is under way, the previous one (`PLINTH_MASTER_KEY_PREVIOUS`), which only unwraps.
 */
export interface MasterKeys {
  readonly current: Buffer
  readonly previous?: Buffer | undefined
  /**
   * Where `current` came from when PLINTH_MASTER_KEY is not set (development and test): the key
   * file a data directory made for itself, or `memory`. Lets a refusal name the real cause.
   */
  readonly generatedIn?: string | undefined
}

/** The AAD a wrapped data key is bound to: a wrapped key copied to another row does not unwrap. */
export const wrappedKeyAad = (id: string) => `encryption_keys:${id}`

/** A new random 32-byte data key and its id (`keyIdFor`, as in every ciphertext it writes). */
export function createDataKey(): { id: string; key: Buffer } {
  const key = randomBytes(KEY_BYTES)
  return { id: keyIdFor(key), key }
}

/**
 * The data key `key` encrypted under the key-encryption key of `master` (AES-256-GCM, keyring
 * format `v1.<kekId>.<payload>`, AAD `encryption_keys:<id>`). The KEK id in it names the master key
 * that wrapped it, so a master key change can tell which keys still need re-wrapping.
 */
export function wrapDataKey(master: Uint8Array, id: string, key: Uint8Array): string {
  return keyringFromKeys([deriveWrappingKey(master)]).encrypt(key, wrappedKeyAad(id))
}

/** Id of the key-encryption key a wrapped data key names (which master key wrapped it). */
export function wrappingKeyIdOf(wrapped: string): string | undefined {
  return ciphertextKeyId(wrapped)
}

/** Id of the key-encryption key derived from `master`, as `wrappingKeyIdOf` reports it. */
export function wrappingKeyId(master: Uint8Array): string {
  return keyIdFor(deriveWrappingKey(master))
}

/**
 * Unwraps a data key with whichever master key wrapped it, and checks that the key is the one its
 * id names (ids are derived from keys, so a row whose key and id disagree was tampered with).
 * @throws PlinthError `PLINTH_CONFIG_INVALID` naming the key id and the master key id it needs,
 *   never key material.
 */
export function unwrapDataKey(masters: MasterKeys, id: string, wrapped: string): Buffer {
  const keks = [masters.current, ...(masters.previous ? [masters.previous] : [])].map(deriveWrappingKey)
  const ring = keyringFromKeys(keks)
  const kekId = ring.keyIdOf(wrapped)
  if (kekId !== undefined && !ring.keyIds.includes(kekId)) {
    if (masters.generatedIn !== undefined) {
      // Nobody changed PLINTH_MASTER_KEY: it was never set, and this instance made its own key.
      throw new PlinthError(
        'PLINTH_CONFIG_INVALID',
        `The data key ${id} of this database was wrapped by another instance's master key (wrapping key ${kekId}). PLINTH_MASTER_KEY is not set, so this instance uses the development key ${masters.generatedIn === 'memory' ? 'it generated in memory' : `its data directory made (${masters.generatedIn})`}, and an instance with another data directory created the keys of this same database. Instances that share a database need the same master key: set PLINTH_MASTER_KEY (or PLINTH_MASTER_KEY_FILE) on every one of them to the key of the instance that created the database (its master.key file), or give each instance its own database.`,
      )
    }
    throw new PlinthError(
      'PLINTH_CONFIG_INVALID',
      `The data key ${id} is wrapped under another master key (wrapping key ${kekId}): was PLINTH_MASTER_KEY changed? Set the old one as PLINTH_MASTER_KEY_PREVIOUS and run \`plinth keys rewrap\` (docs/operations/key-rotation.md).`,
    )
  }
  let key: Buffer
  try {
    key = ring.decrypt(wrapped, wrappedKeyAad(id))
  } catch {
    throw new PlinthError(
      'PLINTH_CONFIG_INVALID',
      `The data key ${id} cannot be unwrapped: its row in encryption_keys was altered or copied from another key.`,
    )
  }
  if (key.length !== KEY_BYTES || keyIdFor(key) !== id) {
    throw new PlinthError(
      'PLINTH_CONFIG_INVALID',
      `The data key ${id} does not match its id: its row in encryption_keys was altered.`,
    )
  }
  return key
}

/**
 * The legacy keys: what values were encrypted with before data keys existed, derived from each
 * master key held (current first). They decrypt until a completed rotation records them retired.
 */
export function legacyKeys(masters: MasterKeys): { id: string; key: Buffer }[] {
  return [masters.current, ...(masters.previous ? [masters.previous] : [])].map((m) => {
    const key = deriveValueKey(m)
    return { id: keyIdFor(key), key }
  })
}
