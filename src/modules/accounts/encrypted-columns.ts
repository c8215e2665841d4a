import { encryptedColumn } from '../../infra/crypto/encrypted-column.ts'

/**
 * TOTP secrets, encrypted with the keyring and bound to their user: AAD
 * `totp_credentials.secret:<userId>` (the prefix predates the registry, so it is kept). Rotation
 * keeps `key_id` in step.
 */
export const totpSecretColumn = encryptedColumn({
  table: 'totp_credentials',
  idColumn: 'user_id',
  column: 'secret_ciphertext',
  keyIdColumn: 'key_id',
  aadPrefix: 'totp_credentials.secret',
})
