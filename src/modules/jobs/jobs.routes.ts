import { Type } from 'typebox'
import { auditCallerOf } from '../../core/audit.ts'
import type { ModuleContext, PlinthApp } from '../../core/module.ts'
import type { ErrorCode } from '../../shared/errors.ts'
import {
  EnqueueBody,
  Enqueued,
  JobListQuery,
  JobName,
  JobSchema,
  JobTypeSchema,
  ScheduleCreateBody,
  SchedulePatchBody,
  ScheduleSchema,
} from './jobs.schemas.ts'

/** Every route asks the job engine, which refuses while it is not running. */
const read = { permission: 'jobs:read' as const, errors: ['PLINTH_JOBS_UNAVAILABLE'] as const }
const manage = { permission: 'jobs:manage' as const, errors: ['PLINTH_JOBS_UNAVAILABLE'] as const }
const also = <T extends { errors: readonly ErrorCode[] }>(config: T, ...errors: ErrorCode[]) => ({
  ...config,
  errors: [...config.errors, ...errors],
})
const IdParams = Type.Object({ id: Type.String({ maxLength: 100 }) })
const NameParams = Type.Object({ name: JobName })

/**
 * Job types, jobs and their dead-letter queues: enqueue, inspect, retry, cancel, purge. Every change
 * is audited in its transaction (`job:*`).
 */
export function jobsRoutes(api: PlinthApp, ctx: ModuleContext): void {
  const { jobs } = ctx
  const tags = ['jobs']

  api.get(
    '/job-types',
    {
      config: read,
      schema: {
        tags,
        summary: 'Registered job types, their policies and queue depths',
        response: { 200: Type.Object({ jobTypes: Type.Array(JobTypeSchema) }) },
      },
    },
    async () => ({ jobTypes: await jobs.types() }),
  )

  const enqueueConfig = also(
    manage,
    'PLINTH_JOB_TYPE_UNKNOWN',
    'PLINTH_JOB_PAYLOAD_INVALID',
    'PLINTH_JOB_INPUT_INVALID',
    'PLINTH_JOB_QUEUE_FULL',
  )
  const enqueuePaths: readonly { path: string; doc: Record<string, unknown> }[] = [
    // Enqueueing is an action on a job type, beside its dead-letter queue: this path cannot be
    // mistaken for `GET /jobs/{id}` (one job).
    {
      path: '/job-types/:name/jobs',
      doc: {
        summary: 'Enqueue a job (202 when created; 200 when an idempotency key matched an existing job)',
      },
    },
    // The first path of the same operation, kept for existing clients until the next API version: it
    // has the shape of `GET /jobs/{id}` under another parameter name, which OpenAPI calls ambiguous.
    {
      path: '/jobs/:name',
      doc: {
        summary: 'Enqueue a job (deprecated path: use POST /api/v1/job-types/{name}/jobs)',
        description:
          'The same operation as `POST /api/v1/job-types/{name}/jobs`, kept for existing clients until the next ' +
          'API version. Its path has the shape of `GET /api/v1/jobs/{id}` (one job) with another parameter ' +
          'name, which OpenAPI tools call ambiguous.',
        deprecated: true,
      },
    },
  ]
  for (const { path, doc } of enqueuePaths) {
    api.post(
      path,
      {
        config: enqueueConfig,
        schema: {
          tags,
          ...doc,
          params: NameParams,
          body: EnqueueBody,
          response: { 200: Enqueued, 202: Enqueued },
        },
      },
      async (request, reply) => {
        const { payload, delay, runAt, priority, idempotencyKey, overflow } = request.body
        const headerKey = request.headers['idempotency-key']
        const result = await jobs.enqueue(request.params.name, payload, {
          delay,
          runAt: runAt ? new Date(runAt) : undefined,
          priority,
          idempotencyKey:
            idempotencyKey ?? (typeof headerKey === 'string' && headerKey ? headerKey : undefined),
          overflow,
          requestId: request.id,
          audit: auditCallerOf(request),
        })
        return reply.code(result.created ? 202 : 200).send(result)
      },
    )
  }

  api.get(
    '/jobs',
    {
      config: read,
      schema: {
        tags,
        summary: 'List jobs, newest first, by name, state and creation time',
        querystring: JobListQuery,
        response: {
          200: Type.Object({
            jobs: Type.Array(JobSchema),
            nextCursor: Type.Union([Type.String(), Type.Null()]),
          }),
        },
      },
    },
    async (request) => {
      const q = request.query
      const page = await jobs.list({
        name: q.name,
        state: q.state,
        from: q.from ? new Date(q.from) : undefined,
        to: q.to ? new Date(q.to) : undefined,
        limit: q.limit,
        cursor: q.cursor,
      })
      return { jobs: page.items, nextCursor: page.nextCursor }
    },
  )

  api.get(
    '/jobs/:id',
    {
      config: also(read, 'PLINTH_JOB_NOT_FOUND'),
      schema: {
        tags,
        summary: 'One job: payload, attempts, last error, timings, request id',
        params: IdParams,
        response: { 200: JobSchema },
      },
    },
    async (request) => jobs.get(request.params.id),
  )

  api.post(
    '/jobs/:id/retry',
    {
      config: also(manage, 'PLINTH_JOB_NOT_FOUND', 'PLINTH_JOB_STATE_CONFLICT'),
      schema: {
        tags,
        summary: 'Run a failed or cancelled job again',
        params: IdParams,
        response: { 200: JobSchema },
      },
    },
    async (request) => jobs.retry(request.params.id, auditCallerOf(request)),
  )

  api.post(
    '/jobs/:id/cancel',
    {
      config: also(manage, 'PLINTH_JOB_NOT_FOUND', 'PLINTH_JOB_STATE_CONFLICT'),
      schema: {
        tags,
        summary: 'Cancel a job that has not started',
        params: IdParams,
        response: { 200: JobSchema },
      },
    },
    async (request) => jobs.cancel(request.params.id, auditCallerOf(request)),
  )

  api.delete(
    '/job-types/:name/dead-letter',
    {
      config: also(manage, 'PLINTH_JOB_TYPE_UNKNOWN'),
      schema: {
        tags,
        summary: "Purge a job type's dead-letter queue",
        params: NameParams,
        response: { 200: Type.Object({ purged: Type.Integer() }) },
      },
    },
    async (request) => ({ purged: await jobs.purgeDeadLetter(request.params.name, auditCallerOf(request)) }),
  )

  api.post(
    '/job-types/:name/dead-letter/redrive',
    {
      config: also(manage, 'PLINTH_JOB_TYPE_UNKNOWN'),
      schema: {
        tags,
        summary: "Move a job type's dead-lettered jobs back into its queue, as new jobs",
        params: NameParams,
        response: { 200: Type.Object({ moved: Type.Integer() }) },
      },
    },
    async (request) => ({ moved: await jobs.redriveDeadLetter(request.params.name, auditCallerOf(request)) }),
  )
}

/** Cron schedules: create, update, pause, resume, delete; every change is audited (`schedule:*`). */
export function schedulesRoutes(api: PlinthApp, ctx: ModuleContext): void {
  const { schedules } = ctx
  const tags = ['schedules']

  api.get(
    '/schedules',
    {
      config: read,
      schema: {
        tags,
        summary: 'List schedules',
        querystring: Type.Object({ jobName: Type.Optional(JobName) }, { additionalProperties: false }),
        response: { 200: Type.Object({ schedules: Type.Array(ScheduleSchema) }) },
      },
    },
    async (request) => ({ schedules: await schedules.list({ jobName: request.query.jobName }) }),
  )

  api.post(
    '/schedules',
    {
      config: also(
        manage,
        'PLINTH_JOB_TYPE_UNKNOWN',
        'PLINTH_SCHEDULE_INVALID',
        'PLINTH_JOB_PAYLOAD_INVALID',
      ),
      schema: {
        tags,
        summary: 'Create a cron schedule',
        body: ScheduleCreateBody,
        response: { 201: ScheduleSchema },
      },
    },
    async (request, reply) => {
      const created = await schedules.create(request.body, auditCallerOf(request))
      return reply.code(201).send(created)
    },
  )

  api.get(
    '/schedules/:id',
    {
      config: also(read, 'PLINTH_SCHEDULE_NOT_FOUND'),
      schema: { tags, summary: 'One schedule', params: IdParams, response: { 200: ScheduleSchema } },
    },
    async (request) => schedules.get(request.params.id),
  )

  api.patch(
    '/schedules/:id',
    {
      config: also(
        manage,
        'PLINTH_SCHEDULE_NOT_FOUND',
        'PLINTH_SCHEDULE_INVALID',
        'PLINTH_JOB_TYPE_UNKNOWN',
        'PLINTH_JOB_PAYLOAD_INVALID',
      ),
      schema: {
        tags,
        summary: 'Change a schedule',
        params: IdParams,
        body: SchedulePatchBody,
        response: { 200: ScheduleSchema },
      },
    },
    async (request) => schedules.update(request.params.id, request.body, auditCallerOf(request)),
  )

  for (const [action, paused] of [
    ['pause', true],
    ['resume', false],
  ] as const) {
    api.post(
      `/schedules/:id/${action}`,
      {
        config: also(manage, 'PLINTH_SCHEDULE_NOT_FOUND'),
        schema: {
          tags,
          summary: `${action === 'pause' ? 'Pause' : 'Resume'} a schedule`,
          params: IdParams,
          response: { 200: ScheduleSchema },
        },
      },
      async (request) => schedules.setPaused(request.params.id, paused, auditCallerOf(request)),
    )
  }

  api.delete(
    '/schedules/:id',
    {
      config: also(manage, 'PLINTH_SCHEDULE_NOT_FOUND'),
      schema: { tags, summary: 'Delete a schedule', params: IdParams, response: { 204: Type.Null() } },
    },
    async (request, reply) => {
      await schedules.remove(request.params.id, auditCallerOf(request))
      reply.code(204)
      return null
    },
  )
}
