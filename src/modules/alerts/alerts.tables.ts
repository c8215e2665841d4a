import type { ColumnType, Generated } from 'kysely'

type Timestamp = ColumnType<Date, Date | string | undefined, Date | string>
type Json<T> = ColumnType<T, string, string>

export type IncidentStatus = 'open' | 'acknowledged' | 'resolved'
export type IncidentSeverity = 'page' | 'ticket'
export type IncidentKind = 'alert' | 'anomaly' | 'security'

/** One incident: a condition that started firing, until it stops (or someone resolves it). */
export interface IncidentsTable {
  id: string
  /** The rule and its labels: at most one incident per fingerprint is not resolved (unique index). */
  fingerprint: string
  rule: string
  kind: IncidentKind
  severity: IncidentSeverity
  status: IncidentStatus
  summary: string
  description: string
  labels: Json<Record<string, string>>
  /** The value that made it fire (ratio, seconds, count…), last seen. */
  value: number | null
  opened_at: Generated<Date>
  last_seen_at: Timestamp
  acknowledged_at: Date | null
  escalated_at: Date | null
  resolved_at: Date | null
}

export type IncidentEventKind = 'opened' | 'escalated' | 'acknowledged' | 'resolved'

/** An incident's timeline; `actor_id` is the user who acknowledged or resolved it (null: Plinth). */
export interface IncidentEventsTable {
  id: string
  incident_id: string
  kind: IncidentEventKind
  actor_id: string | null
  at: Generated<Date>
}

/** What one process measured over one interval (deltas of its counters, its gauges). */
export interface AlertSamplesTable {
  seq: Generated<string>
  instance_id: string
  at: Date
  data: Json<unknown>
}

/** Minute aggregates of every process's samples, written by the evaluator (what a new one reloads). */
export interface AlertMinutesTable {
  minute: Date
  data: Json<unknown>
}

declare module '../../infra/db/tables.ts' {
  interface PlinthTables {
    incidents: IncidentsTable
    incident_events: IncidentEventsTable
    alert_samples: AlertSamplesTable
    alert_minutes: AlertMinutesTable
  }
}
