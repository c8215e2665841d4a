import type { PersonalDataTable } from '../../core/privacy.ts'

/** Webhook subscriptions name who created them; the subscription itself belongs to the installation. */
export const webhooksPersonalData: readonly PersonalDataTable[] = [
  {
    table: 'webhook_subscriptions',
    description: 'Webhook subscriptions you created (they stay, without your name)',
    match: { column: 'created_by', holds: 'user-id' },
    columns: [{ name: 'created_by', export: 'value' }],
    context: ['id', 'event_types', 'description', 'active', 'created_at', 'updated_at'],
    erase: { action: 'set-null' },
  },
]
