import type { PlinthModule } from '../../core/module.ts'
import './keys.tables.ts'
import createEncryptionKeys from './migrations/0007-create-encryption-keys.ts'

/**
 * Data keys for encryption at rest: the `encryption_keys` table. The keyring itself is built by the
 * composition root (`createKeys`, so that every module gets it in `ctx.keyring`); rotation and
 * status are the `plinth keys` commands (docs/operations/key-rotation.md).
 */
export const keysModule: PlinthModule = {
  name: 'keys',
  migrations: { '0007-create-encryption-keys': createEncryptionKeys },
}
