import { isDeepStrictEqual } from 'node:util'
import { type TSchema, Type } from 'typebox'
import { auditCallerOf } from '../../core/audit.ts'
import type { ModuleContext, PlinthApp } from '../../core/module.ts'
import type { BackupService } from './backup.service.ts'
import { BACKUP_DRILL_JOB, BACKUP_JOB } from './backup-job.ts'
import type { Drills } from './drill.ts'

const manage = { permission: 'backups:manage' as const, rateLimit: 'api' as const }
const TARGET = ['PLINTH_BACKUP_NOT_CONFIGURED', 'PLINTH_BACKUP_TARGET_UNAVAILABLE'] as const
const createConfig = {
  ...manage,
  errors: ['PLINTH_BACKUP_NOT_CONFIGURED', 'PLINTH_JOB_QUEUE_FULL', 'PLINTH_JOBS_UNAVAILABLE'] as const,
}
const drillConfig = { ...manage, errors: [...TARGET, 'PLINTH_DRILL_NOT_FOUND'] as const }
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
  files: Type.Optional(
    Type.Object(
      {
        name: Type.String(),
        dumpBytes: Type.Integer(),
        bytes: Type.Integer(),
        sha256: Type.String(),
        roots: Type.Array(
          Type.Object({
            root: Type.String({ description: '`<module>/<name>` of the declared directory' }),
            files: Type.Array(
              Type.Object({ path: Type.String(), size: Type.Integer(), sha256: Type.String() }),
            ),
          }),
        ),
      },
      { description: 'the files part: every file under the directories modules declare (backupPaths)' },
    ),
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

/**
 * True when a queued job's payload already does what a request asks: every option the request sets
 * has the same value there (options it leaves out take the job's defaults, which the stored payload
 * has filled in).
 */
function asksNothingMore(requested: object, queued: unknown): boolean {
  if (typeof queued !== 'object' || queued === null) return Object.keys(requested).length === 0
  return Object.entries(requested).every(([key, value]) =>
    isDeepStrictEqual((queued as Record<string, unknown>)[key], value),
  )
}

const Enqueued = Type.Object({
  job: Type.Object({
    id: Type.String(),
    href: Type.String({ description: 'GET it for the state and, once completed, the output' }),
  }),
  created: Type.Boolean({
    description:
      'False when a job of the same kind was already queued (not yet started): the answer names that one',
  }),
})

const DrillSchema = Type.Object({
  id: Type.String(),
  at: Type.String({ format: 'date-time' }),
  ok: Type.Boolean(),
  backupId: Type.String(),
  backupKind: Type.String(),
  rtoSeconds: Type.Number(),
  rpoSeconds: Type.Number(),
  rpoBasis: Type.Union([Type.Literal('canaries'), Type.Literal('wal-archive'), Type.Literal('backup-age')]),
  targets: Type.Object({ rtoSeconds: Type.Number(), rpoSeconds: Type.Number() }),
  meetsTargets: Type.Object({ rto: Type.Boolean(), rpo: Type.Boolean() }),
  checks: Type.Array(Check),
  rtoBasis: Type.Optional(
    Type.Union([Type.Literal('ready'), Type.Literal('restore')], {
      description:
        '`ready`: start of the restore to /ready 200 on the restored copy; `restore`: to the end of the restore',
    }),
  ),
  restoreSeconds: Type.Optional(Type.Number()),
  ready: Type.Optional(
    Type.Union([
      Type.Object({
        reached: Type.Boolean(),
        seconds: Type.Union([Type.Number(), Type.Null()]),
        detail: Type.String(),
      }),
      Type.Null(),
    ]),
  ),
  canaries: Type.Optional(
    Type.Union([
      Type.Object({
        lastCommittedAt: Type.String({ format: 'date-time' }),
        lastRecoveredAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
        recovered: Type.Integer(),
      }),
      Type.Null(),
    ]),
  ),
  freshBackup: Type.Optional(Type.Boolean()),
  pitr: Type.Optional(
    Type.Union([
      Type.Object({
        toTime: Type.Union([Type.String(), Type.Null()]),
        expected: Type.Optional(Type.Integer()),
        recovered: Type.Optional(Type.Integer()),
        mismatches: Type.Optional(Type.Integer()),
      }),
      Type.Null(),
    ]),
  ),
  walArchiveLagSeconds: Type.Optional(Type.Union([Type.Number(), Type.Null()])),
})
/** What a drill is asked to do (`plinth.backup-drill`'s payload). */
export const DrillBody = Type.Object(
  {
    fresh: Type.Optional(
      Type.Boolean({ description: 'take a fresh backup (after a canary row) and drill on it' }),
    ),
    pitr: Type.Optional(
      Type.Boolean({
        description:
          'restore through point-in-time recovery (pgBackRest) into a scratch cluster instead of the newest logical backup',
      }),
    ),
    toTime: Type.Optional(
      Type.String({
        format: 'date-time',
        maxLength: 40,
        description:
          'with pitr: the time to recover to (ISO 8601 with a zone); default the end of the archived WAL',
      }),
    ),
  },
  { additionalProperties: false },
)
const DrillParams = Type.Object({
  id: Type.String({ pattern: '^\\d{8}T\\d{6}Z-[0-9a-f]{8}$', maxLength: 40 }),
})

/**
 * `POST|GET /admin/backups`, `GET /admin/backups/{id}`, `POST|GET /admin/backups/drills`,
 * `GET /admin/backups/drills/{id}` (permission `backups:manage`). Backups and drills run as jobs:
 * the POSTs answer 202 with the job to follow.
 */
export function backupsRoutes(
  api: PlinthApp,
  ctx: ModuleContext,
  service: () => BackupService,
  drills: () => Drills,
): void {
  /** A POST that enqueues `jobName` with the body as its payload and answers 202 with the job to follow. */
  const enqueueRoute = (path: string, jobName: string, summary: string, body?: TSchema) =>
    api.post(
      path,
      {
        config: createConfig,
        schema: { tags, summary, ...(body ? { body } : {}), response: { 202: Enqueued } },
        // The body is optional: none is the empty object (and is then validated as one).
        preValidation: async (request) => {
          request.body ??= {}
        },
      },
      async (request, reply) => {
        // No target (an in-memory database without PLINTH_BACKUP_DIR or a bucket): 409 now, as the
        // GETs answer, rather than a job that can only fail.
        void service().target
        const payload = (request.body as object | undefined) ?? {}
        // The same work queued and not started yet covers this request: the answer names that job
        // instead of stacking another (a running one still gets one successor, which sees newer
        // data). Repeated clicks or a retrying client never queue a backlog of whole-database work.
        const queued = (await ctx.jobs.list({ name: jobName, state: 'created', limit: 1 })).items[0]
        const id =
          queued && asksNothingMore(payload, queued.payload)
            ? queued.id
            : (
                await ctx.jobs.enqueue(jobName, payload, {
                  requestId: request.id,
                  audit: auditCallerOf(request),
                })
              ).id
        const href = `/api/v1/jobs/${id}`
        return reply
          .code(202)
          .header('location', href)
          .send({ job: { id, href }, created: id !== queued?.id })
      },
    )
  enqueueRoute(
    '/admin/backups',
    BACKUP_JOB,
    'Back up the database: enqueues the plinth.backup job (back up, verify by restoring to a scratch target, prune) and answers 202 with the job to follow',
  )
  enqueueRoute(
    '/admin/backups/drills',
    BACKUP_DRILL_JOB,
    'Run a disaster-recovery drill: enqueues plinth.backup-drill (restore the newest backup to a scratch target, bring a Plinth up on it, check it, measure RTO to /ready 200 and RPO) and answers 202 with the job',
    DrillBody,
  )

  api.get(
    '/admin/backups/drills',
    {
      config: drillConfig,
      schema: {
        tags,
        summary: 'Stored disaster-recovery drill reports, newest first',
        response: { 200: Type.Object({ drills: Type.Array(DrillSchema) }) },
      },
    },
    async () => ({ drills: await drills().list() }),
  )

  api.get(
    '/admin/backups/drills/:id',
    {
      config: drillConfig,
      schema: { tags, summary: 'One drill report', params: DrillParams, response: { 200: DrillSchema } },
    },
    async (request) => drills().get(request.params.id),
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
