import { createHmac, hkdfSync, randomBytes, timingSafeEqual } from 'node:crypto'
import type { Logger } from 'pino'
import type { PlinthConfig } from '../../config/config.schema.ts'
import { decodeMasterKey } from '../../config/config.schema.ts'
import { type Keyring, keyringFromKeys, resolveMasterKey } from '../../infra/crypto/keyring.ts'
import { PlinthError } from '../../shared/errors.ts'

/**
 * Each backup has its own random 256-bit content key. It is stored in the manifest twice, never in
 * clear:
 *
 * - `wrappedKey`: encrypted by `ctx.keyring`, i.e. under the active data key of `encryption_keys`
 *   (and so readable wherever that data key is loaded: after a rotation, while the old key is kept);
 * - `recoveryKey`: encrypted under a key derived from `PLINTH_MASTER_KEY` (HKDF, info
 *   "plinth backup recovery v1"). The data keys themselves live in the database the backup holds, so
 *   after the database is lost this is the way in: the master key alone opens a backup.
 *
 * Either way the AAD binds the wrapped key to the backup id.
 */
export const contentKeyAad = (backupId: string) => `backups.content-key:${backupId}`

export type MasterKeyConfig = Pick<PlinthConfig, 'masterKey' | 'masterKeyPrevious' | 'dataDir' | 'env'>

function recoveryKeyring(config: MasterKeyConfig, logger: Pick<Logger, 'warn' | 'info'>): Keyring {
  const current = resolveMasterKey({
    masterKey: config.masterKey,
    dataDir: config.dataDir,
    env: config.env,
    logger,
  })
  const previous =
    config.masterKeyPrevious === undefined ? undefined : decodeMasterKey(config.masterKeyPrevious)
  const derive = (m: Buffer) =>
    Buffer.from(hkdfSync('sha256', m, new Uint8Array(0), 'plinth backup recovery v1', 32))
  return keyringFromKeys([current, ...(previous ? [previous] : [])].map(derive))
}

export interface WrappedContentKey {
  readonly key: Buffer
  readonly wrappedKey: string
  readonly recoveryKey: string
}

/** A new content key for `backupId`, wrapped both ways. */
export function newContentKey(
  backupId: string,
  keyring: Keyring,
  config: MasterKeyConfig,
  logger: Pick<Logger, 'warn' | 'info'>,
): WrappedContentKey {
  const key = randomBytes(32)
  const aad = contentKeyAad(backupId)
  return {
    key,
    wrappedKey: keyring.encrypt(key, aad),
    recoveryKey: recoveryKeyring(config, logger).encrypt(key, aad),
  }
}

/**
 * The content key of a backup: through the keyring first, then through the master key.
 * @throws PlinthError `PLINTH_BACKUP_KEY_UNAVAILABLE` when neither opens it (wrong master key, or
 *   the wrapped keys were altered — the manifest seal then fails too).
 */
export async function openContentKey(
  backupId: string,
  wrapped: { wrappedKey: string; recoveryKey: string },
  keyring: Keyring,
  config: MasterKeyConfig,
  logger: Pick<Logger, 'warn' | 'info'>,
): Promise<Buffer> {
  const aad = contentKeyAad(backupId)
  for (const attempt of [
    () => keyring.decryptAsync(wrapped.wrappedKey, aad),
    async () => recoveryKeyring(config, logger).decrypt(wrapped.recoveryKey, aad),
  ]) {
    try {
      const key = await attempt()
      if (key.length === 32) return key
    } catch {
      // the next way in
    }
  }
  throw new PlinthError(
    'PLINTH_BACKUP_KEY_UNAVAILABLE',
    `The content key of backup ${backupId} cannot be unwrapped with this server's data keys or master key: set the PLINTH_MASTER_KEY it was made under.`,
  )
}

/** JSON with object keys sorted at every level: the bytes the manifest seal covers. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value)
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`
}

function sealKey(contentKey: Buffer, purpose: string): Buffer {
  return Buffer.from(
    hkdfSync('sha256', contentKey, new Uint8Array(0), `plinth backup ${purpose} seal v1`, 32),
  )
}

/** HMAC-SHA256 (hex) of the canonical JSON of `body` under a key derived from the content key. */
export function sealOf(contentKey: Buffer, purpose: 'manifest' | 'verification', body: unknown): string {
  return createHmac('sha256', sealKey(contentKey, purpose)).update(canonicalJson(body)).digest('hex')
}

/** True when `seal` is the seal of `body`. */
export function sealHolds(
  contentKey: Buffer,
  purpose: 'manifest' | 'verification',
  body: unknown,
  seal: unknown,
): boolean {
  if (typeof seal !== 'string' || !/^[0-9a-f]{64}$/.test(seal)) return false
  return timingSafeEqual(Buffer.from(sealOf(contentKey, purpose, body), 'hex'), Buffer.from(seal, 'hex'))
}
