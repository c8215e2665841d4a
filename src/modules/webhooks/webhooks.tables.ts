import type { ColumnType, Generated } from 'kysely'

type Timestamp = ColumnType<Date, Date | string | undefined, Date | string>

export interface WebhookSubscriptionsTable {
  id: string
  url: string
  /** Exact types, `*`, or a prefix ending in `.*` or `:*`. */
  event_types: string[]
  /** The signing secret, encrypted by the keyring with aad `webhook_subscriptions.secret:<id>`. */
  secret: string
  description: string | null
  active: Generated<boolean>
  created_by: string | null
  created_at: Generated<Date>
  updated_at: Timestamp
}

export type DeliveryStatus = 'succeeded' | 'failed'

/** One row per delivery attempt; `id` is the `plinth-delivery` header the receiver saw. */
export interface WebhookDeliveriesTable {
  id: string
  subscription_id: string
  event_id: string
  event_type: string
  job_id: string | null
  attempt: number
  status: DeliveryStatus
  response_status: number | null
  error: string | null
  duration_ms: number
  created_at: Generated<Date>
}

declare module '../../infra/db/tables.ts' {
  interface PlinthTables {
    webhook_subscriptions: WebhookSubscriptionsTable
    webhook_deliveries: WebhookDeliveriesTable
  }
}
