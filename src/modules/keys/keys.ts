import { join, resolve } from 'node:path'
import type { Kysely } from 'kysely'
import type { Logger } from 'pino'
import type { PlinthConfig } from '../../config/config.schema.ts'
import { decodeMasterKey } from '../../config/config.schema.ts'
import { legacyKeys, type MasterKeys } from '../../infra/crypto/data-keys.ts'
import { assertEncryptedColumns, type EncryptedColumn } from '../../infra/crypto/encrypted-column.ts'
import { keyringFromKeys, resolveMasterKey } from '../../infra/crypto/keyring.ts'
import { createReloadingKeyring, type ReloadingKeyring } from '../../infra/crypto/reloading-keyring.ts'
import type { PlinthTables } from '../../infra/db/tables.ts'
import { createKeyStore, type KeyStore } from './key-store.ts'

type KeysConfig = Pick<PlinthConfig, 'masterKey' | 'masterKeyPrevious' | 'dataDir' | 'env' | 'keysRefresh'>

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

export interface Keys {
  /** What modules encrypt with (`ctx.keyring`); reloads itself once `load()` ran. */
  readonly keyring: ReloadingKeyring
  readonly store: KeyStore
  readonly columns: readonly EncryptedColumn[]
  /**
   * After migrations: creates the first data key if there is none, loads the keys, and reloads them
   * every `PLINTH_KEYS_REFRESH`, so a rotation run elsewhere reaches this process. While the
   * `encryption_keys` table does not exist yet, the legacy keyring stays and the reloads keep trying.
   */
  load(): Promise<void>
  /** Stops the periodic reload. */
  stop(): void
}

const UNDEFINED_TABLE = '42P01'

/**
 * Builds the keyring of a Plinth process. Until `load()` runs (or while the `encryption_keys`
 * migration is pending) it works as before data keys: with the legacy key derived from the master
 * key, which stays readable until a rotation completes.
 */
export function createKeys(deps: {
  config: KeysConfig
  db: Kysely<PlinthTables>
  logger: Logger
  columns: readonly EncryptedColumn[]
}): Keys {
  assertEncryptedColumns(deps.columns)
  const log = deps.logger.child({ component: 'keys' })
  const masters = masterKeysFrom(deps.config, deps.logger)
  const store = createKeyStore(deps.db, masters)
  const keyring = createReloadingKeyring({
    initial: keyringFromKeys(legacyKeys(masters).map((l) => l.key)),
    logger: log,
    async load() {
      try {
        const { id, created } = await store.ensureActiveKey()
        if (created) log.info({ keyId: id }, 'created the first data key')
        return await store.loadKeyring()
      } catch (err) {
        if ((err as { code?: string }).code === UNDEFINED_TABLE) return undefined
        throw err
      }
    },
  })
  return {
    keyring,
    store,
    columns: deps.columns,
    async load() {
      await keyring.refresh()
      keyring.start(deps.config.keysRefresh)
    },
    stop: () => keyring.stop(),
  }
}
