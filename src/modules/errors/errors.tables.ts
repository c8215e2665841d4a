import type { ColumnType, Generated } from 'kysely'

type Timestamp = ColumnType<Date, Date | string, Date | string>

export type ErrorGroupStatus = 'open' | 'resolved' | 'muted'
export type ErrorGroupSource = 'http' | 'job' | 'process'

/** One group of unexpected errors that share a fingerprint (see fingerprint.ts). */
export interface ErrorGroupsTable {
  id: Generated<string>
  fingerprint: string
  source: ErrorGroupSource
  /** Route template (`GET /api/v1/things/:id`), job type, or `uncaughtException`/`unhandledRejection`. */
  location: string
  error_name: string
  /** The latest occurrence's message, truncated. */
  message: string
  /** The normalised top frames, one per line. */
  frames: string
  /** bigint: node-postgres returns it as text. */
  count: ColumnType<string, number, number>
  first_seen: Timestamp
  last_seen: Timestamp
  sample_request_id: string | null
  sample_trace_id: string | null
  first_version: string
  last_version: string
  status: Generated<ErrorGroupStatus>
  status_changed_at: Timestamp | null
}

/** When each version (`<version>+<revision>`) first started: "new since the deploy" is measured from it. */
export interface ErrorDeploysTable {
  version: string
  started_at: Generated<Date>
}

declare module '../../infra/db/tables.ts' {
  interface PlinthTables {
    error_groups: ErrorGroupsTable
    error_deploys: ErrorDeploysTable
  }
}
