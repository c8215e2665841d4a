import { randomUUID } from 'node:crypto'
import { type Kysely, sql } from 'kysely'
import type { AuditCaller } from '../../core/audit.ts'
import type { ModuleContext } from '../../core/module.ts'
import type { PlinthTables } from '../../infra/db/tables.ts'
import { PlinthError } from '../../shared/errors.ts'
import type { IncidentEventKind, IncidentStatus, IncidentsTable } from './alerts.tables.ts'
import { type Firing, fingerprintOf } from './conditions.ts'

export const NOTIFY_JOB = 'plinth.incident-notify'
export type NotifyKind = 'opened' | 'escalated' | 'resolved'

export interface Incident {
  readonly id: string
  readonly fingerprint: string
  readonly rule: string
  readonly kind: IncidentsTable['kind']
  readonly severity: IncidentsTable['severity']
  readonly status: IncidentStatus
  readonly summary: string
  readonly description: string
  readonly labels: Record<string, string>
  readonly value: number | null
  readonly openedAt: string
  readonly lastSeenAt: string
  readonly acknowledgedAt: string | null
  readonly escalatedAt: string | null
  readonly resolvedAt: string | null
  readonly runbook: string | null
}

const iso = (d: Date | string | null) => (d === null ? null : new Date(d).toISOString())

/** The runbook of the Prometheus alert with the same condition (docs/operations/alerts/). */
export function runbookOf(alert: string | undefined): string | null {
  if (!alert) return null
  const slug = alert
    .replace(/([a-z0-9])([A-Z])/g, '$1-$2')
    .replace(/([A-Z])([A-Z][a-z])/g, '$1-$2')
    .toLowerCase()
  return `docs/operations/alerts/${slug}.md`
}

// biome-ignore lint/suspicious/noExplicitAny: a selected row of incidents
export function toIncident(r: any): Incident {
  const labels = (typeof r.labels === 'string' ? JSON.parse(r.labels) : r.labels) as Record<string, string>
  return {
    id: r.id,
    fingerprint: r.fingerprint,
    rule: r.rule,
    kind: r.kind,
    severity: r.severity,
    status: r.status,
    summary: r.summary,
    description: r.description,
    labels,
    value: r.value,
    openedAt: iso(r.opened_at)!,
    lastSeenAt: iso(r.last_seen_at)!,
    acknowledgedAt: iso(r.acknowledged_at),
    escalatedAt: iso(r.escalated_at),
    resolvedAt: iso(r.resolved_at),
    runbook: r.runbook ?? null,
  }
}

async function addEvent(
  db: Kysely<PlinthTables>,
  incidentId: string,
  kind: IncidentEventKind,
  actorId: string | null,
) {
  await db
    .insertInto('incident_events')
    .values({ id: randomUUID(), incident_id: incidentId, kind, actor_id: actorId })
    .execute()
}

async function notify(ctx: ModuleContext, trx: Kysely<PlinthTables>, incidentId: string, kind: NotifyKind) {
  await ctx.jobs.enqueue(
    NOTIFY_JOB,
    { incidentId, kind },
    { db: trx, idempotencyKey: `${incidentId}:${kind}`, overflow: 'accept' },
  )
}

/**
 * Incidents: opened, escalated and resolved by the evaluator, acknowledged and resolved by people.
 * Every change that notifies enqueues its notification in the transaction of the change, once:
 * opening is an insert that a unique index lets only one replica win, and the other changes are
 * conditional updates whose `returning` only one caller sees.
 */
export function createIncidentService(ctx: ModuleContext) {
  const db = ctx.db.kysely
  const now = () => new Date(ctx.now())

  return {
    /** Opens an incident for a firing condition, unless one is active; true when this call opened it. */
    async open(f: Firing): Promise<boolean> {
      const fingerprint = fingerprintOf(f.rule, f.labels)
      return db.transaction().execute(async (trx) => {
        const id = randomUUID()
        const at = now()
        const inserted = await sql<{ id: string }>`insert into incidents
            (id, fingerprint, rule, kind, severity, status, summary, description, labels, value, opened_at, last_seen_at)
          values (${id}, ${fingerprint}, ${f.rule}, ${f.kind}, ${f.severity}, 'open', ${f.summary}, ${f.description},
            ${JSON.stringify({ ...f.labels, ...(f.alert ? { alert: f.alert } : {}) })}::jsonb, ${f.value}, ${at}, ${at})
          on conflict (fingerprint) where status <> 'resolved' do nothing
          returning id`.execute(trx)
        if (inserted.rows.length === 0) return false
        await addEvent(trx, id, 'opened', null)
        await notify(ctx, trx, id, 'opened')
        ctx.logger.warn(
          { incidentId: id, rule: f.rule, fingerprint, severity: f.severity },
          'incident opened',
        )
        return true
      })
    },

    /** Active incidents (open or acknowledged), by fingerprint. */
    async active(): Promise<Map<string, { id: string; status: IncidentStatus }>> {
      const rows = await db
        .selectFrom('incidents')
        .select(['id', 'fingerprint', 'status'])
        .where('status', '<>', 'resolved')
        .execute()
      return new Map(rows.map((r) => [r.fingerprint, { id: r.id, status: r.status }]))
    },

    async touch(id: string, value: number): Promise<void> {
      await db.updateTable('incidents').set({ last_seen_at: now(), value }).where('id', '=', id).execute()
    },

    /** Resolves an active incident; false when it was resolved already (by someone else). */
    async resolve(id: string, caller?: AuditCaller): Promise<boolean> {
      return db.transaction().execute(async (trx) => {
        const done = await trx
          .updateTable('incidents')
          .set({ status: 'resolved', resolved_at: now() })
          .where('id', '=', id)
          .where('status', '<>', 'resolved')
          .returning(['id', 'rule'])
          .executeTakeFirst()
        if (!done) return false
        const actor = caller?.actor.type === 'user' ? (caller.actor.id ?? null) : null
        await addEvent(trx, id, 'resolved', actor)
        await notify(ctx, trx, id, 'resolved')
        if (caller)
          await ctx.audit.record(trx, {
            action: 'incident:resolved',
            ...caller,
            target: { type: 'incident', id },
            outcome: 'success',
            details: { rule: done.rule },
          })
        ctx.logger.info(
          { incidentId: id, rule: done.rule, by: caller ? 'person' : 'evaluator' },
          'incident resolved',
        )
        return true
      })
    },

    /** Escalates the open (unacknowledged) incidents older than `PLINTH_ALERTS_ESCALATE_AFTER`, once each. */
    async escalateDue(): Promise<number> {
      return db.transaction().execute(async (trx) => {
        const due = await trx
          .updateTable('incidents')
          .set({ escalated_at: now() })
          .where('status', '=', 'open')
          .where('escalated_at', 'is', null)
          .where('opened_at', '<=', new Date(ctx.now() - ctx.config.alertsEscalateAfter))
          .returning(['id', 'rule'])
          .execute()
        for (const r of due) {
          await addEvent(trx, r.id, 'escalated', null)
          await notify(ctx, trx, r.id, 'escalated')
          ctx.logger.warn({ incidentId: r.id, rule: r.rule }, 'incident escalated')
        }
        return due.length
      })
    },

    async acknowledge(id: string, caller: AuditCaller): Promise<Incident> {
      return db.transaction().execute(async (trx) => {
        const row = await trx
          .selectFrom('incidents')
          .selectAll()
          .where('id', '=', id)
          .forUpdate()
          .executeTakeFirst()
        if (!row) throw new PlinthError('PLINTH_INCIDENT_NOT_FOUND')
        if (row.status === 'resolved') throw new PlinthError('PLINTH_INCIDENT_RESOLVED')
        if (row.status === 'acknowledged') return toIncident(row)
        const updated = await trx
          .updateTable('incidents')
          .set({ status: 'acknowledged', acknowledged_at: now() })
          .where('id', '=', id)
          .returningAll()
          .executeTakeFirstOrThrow()
        await addEvent(
          trx,
          id,
          'acknowledged',
          caller.actor.type === 'user' ? (caller.actor.id ?? null) : null,
        )
        await ctx.audit.record(trx, {
          action: 'incident:acknowledged',
          ...caller,
          target: { type: 'incident', id },
          outcome: 'success',
          details: { rule: row.rule },
        })
        return toIncident(updated)
      })
    },

    async resolveByPerson(id: string, caller: AuditCaller): Promise<Incident> {
      const row = await db.selectFrom('incidents').selectAll().where('id', '=', id).executeTakeFirst()
      if (!row) throw new PlinthError('PLINTH_INCIDENT_NOT_FOUND')
      if (!(await this.resolve(id, caller))) throw new PlinthError('PLINTH_INCIDENT_RESOLVED')
      return this.show(id).then((s) => s.incident)
    },

    async list(filter: {
      status?: IncidentStatus | 'active' | undefined
      limit: number
    }): Promise<Incident[]> {
      let q = db
        .selectFrom('incidents')
        .selectAll()
        .orderBy('opened_at', 'desc')
        .orderBy('id', 'desc')
        .limit(filter.limit)
      if (filter.status === 'active') q = q.where('status', '<>', 'resolved')
      else if (filter.status) q = q.where('status', '=', filter.status)
      return (await q.execute()).map((r) => withRunbook(toIncident(r)))
    },

    async show(id: string) {
      const row = await db.selectFrom('incidents').selectAll().where('id', '=', id).executeTakeFirst()
      if (!row) throw new PlinthError('PLINTH_INCIDENT_NOT_FOUND')
      const events = await db
        .selectFrom('incident_events')
        .select(['kind', 'actor_id', 'at'])
        .where('incident_id', '=', id)
        .orderBy('at')
        .orderBy('id')
        .execute()
      return {
        incident: withRunbook(toIncident(row)),
        timeline: events.map((e) => ({
          kind: e.kind,
          actorId: e.actor_id,
          at: new Date(e.at).toISOString(),
        })),
      }
    },
  }
}

function withRunbook(i: Incident): Incident {
  return { ...i, runbook: runbookOf(i.labels.alert) }
}

export type IncidentService = ReturnType<typeof createIncidentService>
