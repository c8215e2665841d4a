import { Type } from 'typebox'
import { auditCallerOf } from '../../core/audit.ts'
import type { PlinthApp } from '../../core/module.ts'
import type { IncidentService } from './incidents.service.ts'

const tags = ['incidents']
const IdParams = Type.Object({ id: Type.String({ format: 'uuid' }) })
const readConfig = { permission: 'ops:read' as const, rateLimit: 'api' as const }
const showConfig = { ...readConfig, errors: ['PLINTH_INCIDENT_NOT_FOUND'] as const }
const changeConfig = {
  permission: 'incidents:manage' as const,
  rateLimit: 'api' as const,
  errors: ['PLINTH_INCIDENT_NOT_FOUND', 'PLINTH_INCIDENT_RESOLVED'] as const,
}
const Nullable = <T extends Parameters<typeof Type.Union>[0][number]>(t: T) => Type.Union([t, Type.Null()])
const Status = Type.Union([Type.Literal('open'), Type.Literal('acknowledged'), Type.Literal('resolved')])

export const IncidentSchema = Type.Object({
  id: Type.String({ format: 'uuid' }),
  fingerprint: Type.String(),
  rule: Type.String(),
  kind: Type.Union([Type.Literal('alert'), Type.Literal('anomaly'), Type.Literal('security')]),
  severity: Type.Union([Type.Literal('page'), Type.Literal('ticket')]),
  status: Status,
  summary: Type.String(),
  description: Type.String(),
  labels: Type.Record(Type.String(), Type.String()),
  value: Nullable(Type.Number()),
  openedAt: Type.String({ format: 'date-time' }),
  lastSeenAt: Type.String({ format: 'date-time' }),
  acknowledgedAt: Nullable(Type.String({ format: 'date-time' })),
  escalatedAt: Nullable(Type.String({ format: 'date-time' })),
  resolvedAt: Nullable(Type.String({ format: 'date-time' })),
  runbook: Nullable(Type.String()),
})

/** `/admin/incidents` (read: `ops:read`; acknowledge and resolve: `incidents:manage`). */
export function incidentsRoutes(api: PlinthApp, service: () => IncidentService): void {
  api.get(
    '/admin/incidents',
    {
      config: readConfig,
      schema: {
        tags,
        summary: 'Incidents of the built-in alerting, newest first (`status=active`: open or acknowledged)',
        querystring: Type.Object({
          status: Type.Optional(Type.Union([Status, Type.Literal('active')])),
          limit: Type.Integer({ minimum: 1, maximum: 500, default: 100 }),
        }),
        response: { 200: Type.Object({ incidents: Type.Array(IncidentSchema) }) },
      },
    },
    async (request) => ({ incidents: await service().list(request.query) }),
  )

  api.get(
    '/admin/incidents/:id',
    {
      config: showConfig,
      schema: {
        tags,
        summary: 'One incident and its timeline (opened, escalated, acknowledged, resolved)',
        params: IdParams,
        response: {
          200: Type.Object({
            incident: IncidentSchema,
            timeline: Type.Array(
              Type.Object({
                kind: Type.Union([
                  Type.Literal('opened'),
                  Type.Literal('escalated'),
                  Type.Literal('acknowledged'),
                  Type.Literal('resolved'),
                ]),
                actorId: Nullable(Type.String()),
                at: Type.String({ format: 'date-time' }),
              }),
            ),
          }),
        },
      },
    },
    async (request) => service().show(request.params.id),
  )

  api.post(
    '/admin/incidents/:id/acknowledge',
    {
      config: changeConfig,
      schema: {
        tags,
        summary: 'Acknowledge an incident: someone is on it, so it will not escalate (idempotent)',
        params: IdParams,
        response: { 200: IncidentSchema },
      },
    },
    async (request) => service().acknowledge(request.params.id, auditCallerOf(request)),
  )

  api.post(
    '/admin/incidents/:id/resolve',
    {
      config: changeConfig,
      schema: {
        tags,
        summary:
          'Resolve an incident by hand (a condition that still holds opens a new one at the next evaluation)',
        params: IdParams,
        response: { 200: IncidentSchema },
      },
    },
    async (request) => service().resolveByPerson(request.params.id, auditCallerOf(request)),
  )
}
