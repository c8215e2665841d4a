import { Type } from 'typebox'

const Nullable = <T extends Parameters<typeof Type.Union>[0][number]>(t: T) => Type.Union([t, Type.Null()])
const DateTime = Type.String({ format: 'date-time' })

export const JobName = Type.String({ pattern: '^[a-z][a-z0-9._-]{0,62}$', maxLength: 63 })
export const JobState = Type.Union([
  Type.Literal('created'),
  Type.Literal('retry'),
  Type.Literal('active'),
  Type.Literal('completed'),
  Type.Literal('cancelled'),
  Type.Literal('failed'),
])

export const JobSchema = Type.Object({
  id: Type.String({ format: 'uuid' }),
  name: Type.String(),
  state: JobState,
  payload: Type.Unknown(),
  priority: Type.Integer(),
  attempts: Type.Integer(),
  retryLimit: Type.Integer(),
  requestId: Nullable(Type.String()),
  scheduleId: Nullable(Type.String()),
  lastError: Nullable(Type.String()),
  output: Type.Unknown(),
  idempotencyKey: Nullable(Type.String()),
  source: Nullable(Type.Object({ name: Type.String(), id: Type.String() })),
  createdAt: DateTime,
  runAfter: DateTime,
  startedAt: Nullable(DateTime),
  completedAt: Nullable(DateTime),
})

export const EnqueueBody = Type.Object(
  {
    payload: Type.Unknown({ description: "The job's input; must match the job type's schema." }),
    delay: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: 366 * 86_400_000,
        description: 'Milliseconds to wait before the first attempt.',
      }),
    ),
    runAt: Type.Optional(
      Type.String({ format: 'date-time', description: 'Run no sooner than this time (wins over delay).' }),
    ),
    priority: Type.Optional(Type.Integer({ minimum: -1_000_000, maximum: 1_000_000 })),
    idempotencyKey: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 200,
        description:
          'The same key for the same job type within PLINTH_JOBS_IDEMPOTENCY_WINDOW returns the existing job (200, created: false).',
      }),
    ),
    overflow: Type.Optional(
      Type.Union([Type.Literal('reject'), Type.Literal('accept')], {
        description: 'When the queue is full: reject with 503 and Retry-After (default), or accept anyway.',
      }),
    ),
  },
  { additionalProperties: false, required: ['payload'] },
)

export const Enqueued = Type.Object({ id: Type.String({ format: 'uuid' }), created: Type.Boolean() })

export const JobListQuery = Type.Object(
  {
    name: Type.Optional(Type.String({ maxLength: 100 })),
    state: Type.Optional(JobState),
    from: Type.Optional(Type.String({ format: 'date-time', description: 'Created at or after.' })),
    to: Type.Optional(Type.String({ format: 'date-time', description: 'Created before.' })),
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 200, default: 50 })),
    cursor: Type.Optional(Type.String({ maxLength: 200 })),
  },
  { additionalProperties: false },
)

export const JobTypeSchema = Type.Object({
  name: Type.String(),
  description: Nullable(Type.String()),
  policy: Type.Object({
    concurrency: Type.Integer(),
    priority: Type.Integer(),
    retryLimit: Type.Integer(),
    retryDelay: Type.Integer(),
    backoff: Type.Boolean(),
    retryDelayMax: Type.Integer(),
    timeout: Type.Integer(),
    deadLetter: Type.Boolean(),
    retention: Type.Integer(),
    maxQueued: Type.Integer(),
  }),
  deadLetterQueue: Nullable(Type.String()),
  waiting: Type.Integer(),
  deadLettered: Type.Integer(),
})

const Cron = Type.String({
  minLength: 9,
  maxLength: 200,
  description: '5 fields (minute hour day month weekday) or 6 (seconds first).',
})
const Timezone = Type.String({ minLength: 1, maxLength: 64, description: 'IANA time zone, default UTC.' })
const Missed = Type.Union([Type.Literal('skip'), Type.Literal('once')], {
  description: 'Ticks missed while no worker ran: skip them, or run once for the latest (default skip).',
})

export const ScheduleSchema = Type.Object({
  id: Type.String(),
  jobName: Type.String(),
  cron: Type.String(),
  timezone: Type.String(),
  payload: Type.Unknown(),
  missed: Missed,
  paused: Type.Boolean(),
  description: Nullable(Type.String()),
  builtin: Type.Boolean(),
  createdBy: Nullable(Type.String()),
  createdAt: DateTime,
  updatedAt: DateTime,
  nextRuns: Type.Array(DateTime),
})

export const ScheduleCreateBody = Type.Object(
  {
    jobName: JobName,
    cron: Cron,
    timezone: Type.Optional(Timezone),
    payload: Type.Optional(Type.Unknown()),
    missed: Type.Optional(Missed),
    description: Type.Optional(Type.String({ maxLength: 500 })),
  },
  { additionalProperties: false },
)

export const SchedulePatchBody = Type.Object(
  {
    cron: Type.Optional(Cron),
    timezone: Type.Optional(Timezone),
    payload: Type.Optional(Type.Unknown()),
    missed: Type.Optional(Missed),
    description: Type.Optional(Type.String({ maxLength: 500 })),
  },
  { additionalProperties: false, minProperties: 1 },
)
