import { Type } from 'typebox'
import { auditCallerOf } from '../../core/audit.ts'
import type { ModuleContext, PlinthApp } from '../../core/module.ts'
import type { BackupService } from './backup.service.ts'

const manage = { permission: 'backups:manage' as const, rateLimit: 'api' as const }
const TARGET = ['PLINTH_BACKUP_NOT_CONFIGURED', 'PLINTH_BACKUP_TARGET_UNAVAILABLE'] as const
const createConfig = {
  ...manage,
  errors: [
    ...TARGET,
    'PLINTH_BACKUP_IN_PROGRESS',
    'PLINTH_BACKUP_KEY_UNAVAILABLE',
    'PLINTH_BACKUP_CORRUPT',
  ] as const,
}
const listConfig = { ...manage, errors: TARGET }
const showConfig = { ...manage, errors: [...TARGET, 'PLINTH_BACKUP_NOT_FOUND'] as const }
const tags = ['backups']
const IdParams = Type.Object({ id: Type.String({ pattern: '^\\d{8}T\\d{6}Z-[0-9a-f]{8}$', maxLength: 40 }) })

const Check = Type.Object({
  name: Type.String(),
  ok: Type.Boolean(),
  detail: Type.String(),
  code: Type.Optional(Type.String()),
})
const VerificationSchema = Type.Object({
  id: Type.String(),
  ok: Type.Boolean(),
  at: Type.String({ format: 'date-time' }),
  durationMs: Type.Integer(),
  checks: Type.Array(Check),
})
const ManifestSchema = Type.Object({
  format: Type.Literal(1),
  id: Type.String(),
  kind: Type.Union([Type.Literal('postgres'), Type.Literal('embedded')]),
  engine: Type.String(),
  startedAt: Type.String({ format: 'date-time' }),
  finishedAt: Type.String({ format: 'date-time' }),
  plinthVersion: Type.String(),
  postgresVersion: Type.String(),
  migrationHead: Type.Union([Type.String(), Type.Null()]),
  rowCounts: Type.Record(Type.String(), Type.Integer()),
  auditHead: Type.Union([Type.Object({ seq: Type.String(), hash: Type.String() }), Type.Null()]),
  compression: Type.String(),
  chunkSize: Type.Integer(),
  parts: Type.Array(
    Type.Object({
      name: Type.String(),
      dumpBytes: Type.Integer(),
      bytes: Type.Integer(),
      sha256: Type.String(),
    }),
  ),
})
export const BackupSchema = Type.Object({
  id: Type.String(),
  status: Type.Union([
    Type.Literal('verified'),
    Type.Literal('failed'),
    Type.Literal('unverified'),
    Type.Literal('damaged'),
  ]),
  manifest: Type.Union([ManifestSchema, Type.Null()]),
  verification: Type.Union([VerificationSchema, Type.Null()]),
  problem: Type.Optional(Type.String()),
})

/** `POST|GET /admin/backups`, `GET /admin/backups/{id}` (permission `backups:manage`). */
export function backupsRoutes(api: PlinthApp, _ctx: ModuleContext, service: () => BackupService): void {
  api.post(
    '/admin/backups',
    {
      config: createConfig,
      schema: {
        tags,
        summary:
          'Back up the database now (one at a time; 409 PLINTH_BACKUP_IN_PROGRESS otherwise), then verify it by restoring it to a scratch target',
        response: { 201: BackupSchema },
      },
    },
    async (request, reply) => {
      const caller = auditCallerOf(request)
      const created = await service().create({ caller })
      await service().verify(created.id, { caller })
      return reply.code(201).send(await service().show(created.id))
    },
  )

  api.get(
    '/admin/backups',
    {
      config: listConfig,
      schema: {
        tags,
        summary: 'Every backup in the target, newest first, with its verification',
        response: { 200: Type.Object({ backups: Type.Array(BackupSchema) }) },
      },
    },
    async () => ({ backups: await service().list() }),
  )

  api.get(
    '/admin/backups/:id',
    {
      config: showConfig,
      schema: {
        tags,
        summary: 'One backup: its manifest and its last verification',
        params: IdParams,
        response: { 200: BackupSchema },
      },
    },
    async (request) => service().show(request.params.id),
  )
}
