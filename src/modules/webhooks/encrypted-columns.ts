import { encryptedColumn } from '../../infra/crypto/encrypted-column.ts'

/**
 * Webhook signing secrets, encrypted with the keyring and bound to their subscription: AAD
 * `webhook_subscriptions.secret:<id>`. Declared so that `plinth keys rotate` re-encrypts them.
 */
export const webhookSecretColumn = encryptedColumn({
  table: 'webhook_subscriptions',
  idColumn: 'id',
  column: 'secret',
})
