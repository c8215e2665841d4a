import type { Kysely } from 'kysely'
import type { Logger } from 'pino'
import { legacyKeys } from '../../infra/crypto/data-keys.ts'
import { assertEncryptedColumns, type EncryptedColumn } from '../../infra/crypto/encrypted-column.ts'
import { keyringFromKeys } from '../../infra/crypto/keyring.ts'
import { createReloadingKeyring, type ReloadingKeyring } from '../../infra/crypto/reloading-keyring.ts'
import type { PlinthTables } from '../../infra/db/tables.ts'
import { createKeyStore, type KeyStore } from './key-store.ts'
import { type KeysConfig, masterKeysFrom } from './master-keys.ts'

export interface ProcessKeyring {
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
export function createProcessKeyring(deps: {
  config: KeysConfig
  db: Kysely<PlinthTables>
  logger: Logger
  columns: readonly EncryptedColumn[]
}): ProcessKeyring {
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
