import type { PersonalDataTable } from '../../core/privacy.ts'

/** What `plinth import pocketbase|supabase` kept of a person's old account, beside the account itself. */
export const importsPersonalData: readonly PersonalDataTable[] = [
  {
    table: 'migration_records',
    description: 'Your account as the system Plinth replaced held it (brought over by a migration)',
    match: { column: 'user_id', holds: 'user-id' },
    columns: [
      { name: 'user_id', export: 'value' },
      { name: 'data', export: 'value' },
    ],
    context: ['source', 'collection', 'external_id', 'imported_at'],
    erase: { action: 'delete' },
  },
]
