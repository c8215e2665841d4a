import type { ColumnType, Generated } from 'kysely'

import type { MissedPolicy } from '../../core/jobs.ts'

export type { MissedPolicy }

export interface JobSchedulesTable {
  id: string
  job_name: string
  cron: string
  timezone: Generated<string>
  payload: ColumnType<unknown, string, string>
  missed: Generated<MissedPolicy>
  paused: Generated<boolean>
  description: string | null
  builtin: Generated<boolean>
  created_by: string | null
  created_at: Generated<Date>
  updated_at: ColumnType<Date, Date | string | undefined, Date | string>
}

export interface JobIdempotencyKeysTable {
  job_name: string
  key: string
  job_id: string
  expires_at: ColumnType<Date, Date | string, Date | string>
}

export interface JobHeartbeatTable {
  id: number
  completed_at: ColumnType<Date, Date | string, Date | string>
  job_id: string
}

declare module '../../infra/db/tables.ts' {
  interface PlinthTables {
    job_schedules: JobSchedulesTable
    job_idempotency_keys: JobIdempotencyKeysTable
    job_heartbeat: JobHeartbeatTable
  }
}
