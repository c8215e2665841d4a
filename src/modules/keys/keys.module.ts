import type { PlinthModule } from '../../core/module.ts'
import './keys.tables.ts'
import createEncryptionKeys from './migrations/0007-create-encryption-keys.ts'
import { createProcessKeyring } from './process-keyring.ts'

/**
 * Data keys for encryption at rest: the `encryption_keys` table, and the keyring every module gets
 * in `ctx.keyring` (`createProcessKeyring`: the legacy key at once, the data keys loaded in `prepare()` after
 * migrations and reloaded every `PLINTH_KEYS_REFRESH`); rotation and status are the `plinth keys`
 * commands (docs/operations/key-rotation.md).
 */
export const keysModule: PlinthModule = {
  name: 'keys',
  migrations: { '0007-create-encryption-keys': createEncryptionKeys },
  provides: {
    keyring(ctx) {
      const keys = createProcessKeyring({
        config: ctx.config,
        db: ctx.db.kysely,
        logger: ctx.logger,
        columns: ctx.encryptedColumns,
      })
      return { value: keys.keyring, prepare: () => keys.load(), close: () => keys.stop() }
    },
  },
}
