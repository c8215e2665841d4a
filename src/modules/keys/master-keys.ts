import { join, resolve } from 'node:path'
import type { Logger } from 'pino'
import type { PlinthConfig } from '../../config/config.schema.ts'
import { decodeMasterKey } from '../../config/config.schema.ts'
import type { MasterKeys } from '../../infra/crypto/data-keys.ts'
import { resolveMasterKey } from '../../infra/crypto/keyring.ts'

export type KeysConfig = Pick<
  PlinthConfig,
  'masterKey' | 'masterKeyPrevious' | 'dataDir' | 'env' | 'keysRefresh'
>

/**
 * The master keys from the configuration. Without `PLINTH_MASTER_KEY`, staging and production
 * refuse to start; development and test generate one into the data directory, with a warning.
 */
export function masterKeysFrom(config: KeysConfig, logger: Pick<Logger, 'warn' | 'info'>): MasterKeys {
  const current = resolveMasterKey({
    masterKey: config.masterKey,
    dataDir: config.dataDir,
    env: config.env,
    logger,
  })
  const previous =
    config.masterKeyPrevious === undefined ? undefined : decodeMasterKey(config.masterKeyPrevious)
  const generatedIn =
    config.masterKey !== undefined
      ? undefined
      : config.dataDir === 'memory://'
        ? 'memory'
        : join(resolve(config.dataDir), 'master.key')
  return Object.freeze({ current, previous: previous?.equals(current) ? undefined : previous, generatedIn })
}
