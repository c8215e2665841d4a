import type { ColumnType, Generated } from 'kysely'

type Int8 = ColumnType<string, number | string | undefined, number | string>
type Json = ColumnType<unknown, string | null | undefined, string | null>

export interface ImportCheckpointsTable {
  id: Generated<string>
  module: string
  dataset: string
  file: string
  dry_run: boolean
  format: 'json' | 'ndjson' | 'csv'
  file_size: Int8
  file_mtime_ms: number
  file_head_sha256: string
  header: Json
  byte_offset: Int8
  line: Int8
  rows: Int8
  inserted: Int8
  updated: Int8
  unchanged: Int8
  rejected: Int8
  /** Keys stored in import_seen_keys (unlogged: a resume that finds fewer starts the file again). */
  seen_keys: Int8
  status: 'running' | 'complete' | 'failed'
  error: string | null
  started_at: Generated<Date>
  updated_at: Generated<Date>
}

export interface ImportSeenKeysTable {
  checkpoint_id: string
  key_hash: Int8
  line: Int8
}

export interface ImportRejectionsTable {
  checkpoint_id: string
  line: Int8
  reason: string
}

export interface MigrationRecordsTable {
  source: string
  collection: string
  external_id: string
  user_id: string | null
  data: Json
  imported_at: Generated<Date>
}

declare module '../../infra/db/tables.ts' {
  interface PlinthTables {
    import_checkpoints: ImportCheckpointsTable
    import_seen_keys: ImportSeenKeysTable
    import_rejections: ImportRejectionsTable
    migration_records: MigrationRecordsTable
  }
}
