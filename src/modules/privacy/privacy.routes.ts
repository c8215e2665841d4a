import type { FastifyReply, FastifyRequest } from 'fastify'
import { Type } from 'typebox'
import { actorOf } from '../../core/audit.ts'
import { SESSION_COOKIE } from '../../core/identity.ts'
import type { ModuleContext, PlinthApp } from '../../core/module.ts'
import { PlinthError } from '../../shared/errors.ts'
import { createPrivacyService, EXPORT_FORMAT, type PersonalDataExport } from './privacy.service.ts'

const Id = Type.Object({ id: Type.String({ format: 'uuid' }) }, { additionalProperties: false })

const ExportSchema = Type.Object({
  format: Type.Literal(EXPORT_FORMAT),
  generatedAt: Type.String({ format: 'date-time' }),
  subject: Type.Object({ userId: Type.String(), email: Type.String() }),
  tables: Type.Array(
    Type.Object({
      module: Type.String(),
      table: Type.String(),
      description: Type.String(),
      match: Type.String({ description: 'How the rows were found' }),
      columns: Type.Record(
        Type.String(),
        Type.Object({
          export: Type.Union([Type.Literal('value'), Type.Literal('presence'), Type.Literal('omit')]),
          note: Type.Optional(Type.String()),
        }),
        {
          description:
            'Each personal column: its value, only whether it is set (presence), or left out (omit)',
        },
      ),
      rows: Type.Array(Type.Record(Type.String(), Type.Unknown())),
    }),
  ),
})

const ErasureSchema = Type.Object({
  erasedAt: Type.String({ format: 'date-time' }),
  pseudonym: Type.String({ description: 'What stands for the person in the audit rows that were kept' }),
  rows: Type.Record(Type.String(), Type.Integer(), { description: 'Rows erased per table (and column)' }),
})

const EraseMeBody = Type.Object(
  {
    password: Type.String({ minLength: 1, maxLength: 1024 }),
    code: Type.Optional(Type.String({ maxLength: 16 })),
    recoveryCode: Type.Optional(Type.String({ maxLength: 64 })),
  },
  { additionalProperties: false },
)

function meta(request: FastifyRequest) {
  const ua = request.headers['user-agent']
  return { ip: request.ip, userAgent: typeof ua === 'string' ? ua : undefined, requestId: request.id }
}

function attachment(reply: FastifyReply, data: PersonalDataExport): PersonalDataExport {
  reply.header('content-disposition', 'attachment; filename="plinth-personal-data.json"')
  return data
}

/**
 * The person's own export and erasure (`/me/export`, `DELETE /me`), and the administrators'
 * (`/admin/users/:id/export`, `DELETE /admin/users/:id`, permission `privacy:manage`).
 */
export function privacyRoutes(api: PlinthApp, ctx: ModuleContext): void {
  const privacy = createPrivacyService(ctx)
  const db = ctx.db.kysely
  const exported = (request: FastifyRequest, userId: string) =>
    ctx.audit.record(db, {
      action: 'privacy:exported',
      actor: actorOf(request.principal!),
      target: { type: 'user', id: userId },
      outcome: 'success',
      ...meta(request),
    })

  api.get(
    '/me/export',
    {
      config: { permission: 'self:read' },
      schema: {
        tags: ['me'],
        summary: 'Everything Plinth holds about me, as one JSON document',
        response: { 200: ExportSchema },
      },
    },
    async (request, reply) => {
      const userId = request.principal!.userId
      const data = await privacy.export(userId)
      await exported(request, userId)
      return attachment(reply, data)
    },
  )

  api.delete(
    '/me',
    {
      config: {
        permission: 'self:write',
        rateLimit: 'auth',
        errors: [
          'PLINTH_AUTH_INVALID_CREDENTIALS',
          'PLINTH_AUTH_MFA_INVALID',
          'PLINTH_AUTH_LOCKED',
          'PLINTH_USER_LAST_ADMIN',
        ],
      },
      schema: {
        tags: ['me'],
        summary: 'Erase my account and my personal data (password, and a code with a second factor)',
        body: EraseMeBody,
        response: { 200: ErasureSchema },
      },
    },
    async (request, reply) => {
      const p = request.principal!
      if (p.kind !== 'session')
        throw new PlinthError(
          'PLINTH_AUTH_FORBIDDEN',
          'Erasing an account needs a signed-in session, not an API token.',
        )
      await privacy.reauthenticate(p.userId, request.body, meta(request))
      const report = await privacy.erase(p.userId, { via: 'self' }, meta(request))
      reply.clearCookie(SESSION_COOKIE, { path: '/' })
      return report
    },
  )

  api.get(
    '/admin/users/:id/export',
    {
      config: { permission: 'privacy:manage', errors: ['PLINTH_USER_NOT_FOUND'] },
      schema: {
        tags: ['admin'],
        summary: 'Everything Plinth holds about a user, as one JSON document',
        params: Id,
        response: { 200: ExportSchema },
      },
    },
    async (request, reply) => {
      const data = await privacy.export(request.params.id)
      await exported(request, request.params.id)
      return attachment(reply, data)
    },
  )

  api.delete(
    '/admin/users/:id',
    {
      config: { permission: 'privacy:manage', errors: ['PLINTH_USER_NOT_FOUND', 'PLINTH_USER_LAST_ADMIN'] },
      schema: {
        tags: ['admin'],
        summary: 'Erase a user: account, sessions, tokens and personal data; audit rows are pseudonymised',
        params: Id,
        response: { 200: ErasureSchema },
      },
    },
    async (request) =>
      privacy.erase(request.params.id, { via: 'admin', actor: actorOf(request.principal!) }, meta(request)),
  )
}
