import type { PersonalDataTable } from '../../core/privacy.ts'
import { maskPlinthSecrets } from '../../observability/logger.ts'

/** What a masked secret reads as. */
export const MASKED_SECRET = '[link secret removed]'

/** A mail body with the secrets of its links (password resets, invitations) masked. */
export const maskSecrets = (value: unknown) =>
  typeof value === 'string' ? maskPlinthSecrets(value, MASKED_SECRET) : value

/** Every e-mail sent (or captured) to the person's address. */
export const mailPersonalData: readonly PersonalDataTable[] = [
  {
    table: 'mail_outbox',
    description: 'E-mail sent to your address',
    match: { column: 'to_address', holds: 'email' },
    columns: [
      { name: 'to_address', export: 'value' },
      { name: 'subject', export: 'value' },
      {
        name: 'text_body',
        export: 'value',
        note: 'the secrets of single-use links (password resets, invitations) are masked',
        exportAs: maskSecrets,
      },
      {
        name: 'html_body',
        export: 'value',
        note: 'the secrets of single-use links are masked',
        exportAs: maskSecrets,
      },
      { name: 'last_error', export: 'value' },
    ],
    context: ['id', 'category', 'status', 'attempts', 'created_at', 'sent_at'],
    erase: { action: 'delete' },
  },
]
