import type { ColumnType, Generated, Selectable } from 'kysely'

type Json = ColumnType<unknown, string | null | undefined, never>

/**
 * One audited action. Rows are inserted unsealed (`seq`, `prev_hash` and `hash` null) in the
 * transaction of the change they record; sealing sets those three once, and nothing else ever
 * changes (a trigger refuses it). bigint columns come back as strings.
 */
export interface AuditLogTable {
  id: Generated<string>
  /** Position in the hash chain, gap-free from the last checkpoint; null until sealed. */
  seq: ColumnType<string | null, never, string>
  at: ColumnType<Date, Date, never>
  actor_type: 'user' | 'token' | 'system' | 'anonymous'
  actor_id: string | null
  actor_token_id: string | null
  action: string
  target_type: string | null
  target_id: string | null
  outcome: 'success' | 'failure'
  ip: string | null
  user_agent: string | null
  request_id: string | null
  details: Json
  changes: Json
  prev_hash: ColumnType<string | null, never, string>
  hash: ColumnType<string | null, never, string>
}

/** What retention pruning removed: the chain resumes from `last_hash` at `last_seq + 1`. */
export interface AuditCheckpointsTable {
  id: Generated<string>
  created_at: Generated<Date>
  /** Rows older than this were to be pruned. */
  pruned_before: Date
  last_seq: ColumnType<string, string, never>
  last_hash: string
  last_at: Date
  rows_pruned: ColumnType<string, string, never>
}

declare module '../../infra/db/tables.ts' {
  interface PlinthTables {
    audit_log: AuditLogTable
    audit_checkpoints: AuditCheckpointsTable
  }
}

export type AuditRow = Selectable<AuditLogTable>
export type AuditCheckpoint = Selectable<AuditCheckpointsTable>
