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
  /**
   * Random per-row key (hex) of the commitments the hash makes to the erasable fields (hash v2,
   * audit-hash.ts); set by sealing, removed by erasure. Null on rows sealed with v1.
   */
  salt: ColumnType<string | null, never, string>
  /** Set when erasure pseudonymised the row after it was sealed (docs/decisions/0010-privacy-erasure.md). */
  erasure: ColumnType<AuditErasure | null, never, string>
}

/** The fields erasure may rewrite: the hash covers each through its own salted commitment. */
export const ERASABLE_FIELDS = ['actor_id', 'target_id', 'ip', 'user_agent', 'details', 'changes'] as const
export type ErasableField = (typeof ERASABLE_FIELDS)[number]

/**
 * What erasure keeps of a sealed row so that its hash still verifies: the commitments of the fields
 * it rewrote (whose salts are gone, so the old values can no longer be tested against them), the
 * salts of the fields it kept, and the pseudonyms it wrote. On a row sealed with hash v1, whose hash
 * covers the raw values, only `v1: true` and the pseudonyms: its content can no longer be verified.
 */
export interface AuditErasure {
  readonly at: string
  readonly pseudonyms: readonly string[]
  readonly commitments?: Readonly<Partial<Record<ErasableField, string>>>
  readonly salts?: Readonly<Partial<Record<ErasableField, string>>>
  readonly v1?: true
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
