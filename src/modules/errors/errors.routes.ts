import { Type } from 'typebox'
import { auditCallerOf } from '../../core/audit.ts'
import type { PlinthApp } from '../../core/module.ts'
import type { ErrorService } from './errors.service.ts'

const tags = ['errors']
const Status = Type.Union([Type.Literal('open'), Type.Literal('resolved'), Type.Literal('muted')])
const IdParams = Type.Object({ id: Type.String({ format: 'uuid' }) })

export const ErrorGroupSchema = Type.Object({
  id: Type.String({ format: 'uuid' }),
  fingerprint: Type.String(),
  source: Type.Union([Type.Literal('http'), Type.Literal('job'), Type.Literal('process')]),
  location: Type.String({
    description: 'Route template, job type, or uncaughtException/unhandledRejection.',
  }),
  name: Type.String({ description: 'The error class (or `Error <code>`).' }),
  message: Type.String({ description: 'The latest occurrence’s message (truncated).' }),
  frames: Type.Array(Type.String(), { description: 'Top stack frames, normalised (no line numbers).' }),
  count: Type.Integer(),
  firstSeen: Type.String({ format: 'date-time' }),
  lastSeen: Type.String({ format: 'date-time' }),
  sampleRequestId: Type.Union([Type.String(), Type.Null()]),
  sampleTraceId: Type.Union([Type.String(), Type.Null()]),
  firstVersion: Type.String(),
  lastVersion: Type.String(),
  status: Status,
  statusChangedAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
  newSinceDeploy: Type.Boolean({ description: 'First seen after the running version first started.' }),
})

const read = { permission: 'errors:read' as const, rateLimit: 'api' as const }
const manage = { permission: 'errors:manage' as const, rateLimit: 'api' as const }
const notFound = ['PLINTH_ERROR_GROUP_NOT_FOUND'] as const

/** `GET /admin/errors`, `GET|PATCH /admin/errors/{id}`. */
export function errorsRoutes(api: PlinthApp, service: () => ErrorService): void {
  api.get(
    '/admin/errors',
    {
      config: read,
      schema: {
        tags,
        summary: 'Unexpected errors grouped by fingerprint, most recently seen first',
        querystring: Type.Object({
          status: Type.Optional(Status),
          newSinceDeploy: Type.Optional(
            Type.Boolean({ description: 'Only groups first seen since the running version started.' }),
          ),
          limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 500, default: 100 })),
        }),
        response: {
          200: Type.Object({
            deploy: Type.Object({ version: Type.String(), startedAt: Type.String({ format: 'date-time' }) }),
            items: Type.Array(ErrorGroupSchema),
          }),
        },
      },
    },
    async (request) => service().list(request.query),
  )

  api.get(
    '/admin/errors/:id',
    {
      config: { ...read, errors: notFound },
      schema: { tags, summary: 'One error group', params: IdParams, response: { 200: ErrorGroupSchema } },
    },
    async (request) => service().get(request.params.id),
  )

  api.patch(
    '/admin/errors/:id',
    {
      config: { ...manage, errors: notFound },
      schema: {
        tags,
        summary: 'Resolve, mute or reopen an error group (a resolved group reopens by itself when it recurs)',
        params: IdParams,
        body: Type.Object({ status: Status }, { additionalProperties: false }),
        response: { 200: ErrorGroupSchema },
      },
    },
    async (request) => service().setStatus(request.params.id, request.body.status, auditCallerOf(request)),
  )
}
