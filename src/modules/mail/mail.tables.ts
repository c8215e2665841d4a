import type { ColumnType, Generated, Selectable } from 'kysely'

/** `pending` while sending, then `sent`, `failed`, or `logged` (captured without SMTP in development and test). */
export type MailStatus = 'pending' | 'sent' | 'failed' | 'logged'

export interface MailOutboxTable {
  id: Generated<string>
  to_address: string
  subject: string
  text_body: string
  html_body: string | null
  category: string | null
  status: MailStatus
  attempts: Generated<number>
  last_error: string | null
  created_at: Generated<Date>
  sent_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>
}

declare module '../../infra/db/tables.ts' {
  interface PlinthTables {
    mail_outbox: MailOutboxTable
  }
}

export type MailOutboxRow = Selectable<MailOutboxTable>
