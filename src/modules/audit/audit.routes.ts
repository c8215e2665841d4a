import { Readable } from 'node:stream'
import { Type } from 'typebox'
import { auditCallerOf } from '../../core/audit.ts'
import type { ModuleContext, PlinthApp } from '../../core/module.ts'
import { type AuditFilter, exportAudit, listAudit } from './audit-query.ts'

const tags = ['audit']
const read = { permission: 'audit:read' as const }
const Nullable = <T extends ReturnType<typeof Type.String>>(t: T) => Type.Union([t, Type.Null()])
const Short = (max: number) => Type.String({ minLength: 1, maxLength: max })
const DateTime = Type.String({ format: 'date-time' })

const Filters = {
  actor: Type.Optional(Short(128)),
  actorType: Type.Optional(
    Type.Union([
      Type.Literal('user'),
      Type.Literal('token'),
      Type.Literal('system'),
      Type.Literal('anonymous'),
    ]),
  ),
  action: Type.Optional(
    Type.String({ pattern: '^[a-z][a-z0-9_-]{0,63}:([a-z][a-z0-9_-]{0,63}|\\*)$', maxLength: 129 }),
  ),
  targetType: Type.Optional(Short(64)),
  targetId: Type.Optional(Short(256)),
  outcome: Type.Optional(Type.Union([Type.Literal('success'), Type.Literal('failure')])),
  requestId: Type.Optional(Short(128)),
  from: Type.Optional(DateTime),
  to: Type.Optional(DateTime),
}
const ListQuery = Type.Object(
  {
    ...Filters,
    limit: Type.Integer({ minimum: 1, maximum: 500, default: 50 }),
    cursor: Type.Optional(Short(64)),
  },
  { additionalProperties: false },
)
const ExportQuery = Type.Object(Filters, { additionalProperties: false })

export const AuditEntrySchema = Type.Object({
  id: Type.String(),
  seq: Type.String({ description: 'Position in the hash chain' }),
  at: DateTime,
  actor: Type.Object({
    type: Type.String(),
    id: Nullable(Type.String()),
    tokenId: Nullable(Type.String()),
  }),
  action: Type.String(),
  target: Type.Object({ type: Nullable(Type.String()), id: Nullable(Type.String()) }),
  outcome: Type.String(),
  ip: Nullable(Type.String()),
  userAgent: Nullable(Type.String()),
  requestId: Nullable(Type.String()),
  details: Type.Unknown(),
  changes: Type.Unknown({ description: '{ before, after } of what changed, secrets masked' }),
  prevHash: Type.String(),
  hash: Type.String(),
  salt: Nullable(Type.String({ description: 'Key of the commitments to the erasable fields (hash v2)' })),
  erasure: Type.Unknown({ description: 'Set when erasure pseudonymised the row after sealing' }),
})

type FilterQuery = { [K in keyof typeof Filters]?: string }

function toFilter(q: FilterQuery): AuditFilter {
  return {
    actor: q.actor,
    actorType: q.actorType as AuditFilter['actorType'],
    action: q.action,
    targetType: q.targetType,
    targetId: q.targetId,
    outcome: q.outcome as AuditFilter['outcome'],
    requestId: q.requestId,
    from: q.from === undefined ? undefined : new Date(q.from),
    to: q.to === undefined ? undefined : new Date(q.to),
  }
}

/** Only the filters given, for the audit row of the read itself. */
const given = (q: FilterQuery) => Object.fromEntries(Object.entries(q).filter(([, v]) => v !== undefined))

/** Reading the audit log (itself audited: it holds addresses and user agents of other people). */
export function auditRoutes(api: PlinthApp, ctx: ModuleContext): void {
  const db = ctx.db.kysely

  api.get(
    '/audit',
    {
      config: { ...read, errors: ['PLINTH_AUDIT_CURSOR_INVALID'] },
      schema: {
        tags,
        summary: 'Audit log, newest first, filtered; follow nextCursor for older rows',
        querystring: ListQuery,
        response: {
          200: Type.Object({
            entries: Type.Array(AuditEntrySchema),
            nextCursor: Nullable(Type.String()),
          }),
        },
      },
    },
    async (request) => {
      const { limit, cursor, ...filters } = request.query
      // Rows committed a moment ago join the chain now rather than in a few milliseconds.
      await ctx.audit.seal()
      const page = await listAudit(db, toFilter(filters), { limit, cursor })
      await ctx.audit.record(db, {
        action: 'audit:read',
        ...auditCallerOf(request),
        outcome: 'success',
        details: { filters: given(filters), rows: page.entries.length },
      })
      return page
    },
  )

  api.get(
    '/audit/export',
    {
      config: read,
      schema: {
        tags,
        summary: 'The filtered audit log as NDJSON, oldest first, streamed',
        querystring: ExportQuery,
        produces: ['application/x-ndjson'],
        response: { 200: Type.String({ description: 'One audit entry (as in GET /audit) per line' }) },
      },
    },
    async (request, reply) => {
      const filters = request.query
      await ctx.audit.seal()
      await ctx.audit.record(db, {
        action: 'audit:exported',
        ...auditCallerOf(request),
        outcome: 'success',
        details: { filters: given(filters) },
      })
      const lines = async function* () {
        for await (const entry of exportAudit(db, toFilter(filters))) yield `${JSON.stringify(entry)}\n`
      }
      reply.type('application/x-ndjson; charset=utf-8')
      reply.header('content-disposition', 'attachment; filename="plinth-audit.ndjson"')
      // The schema describes each line for the docs; a stream is sent as is, never serialized.
      return reply.send(Readable.from(lines()) as unknown as string)
    },
  )
}
