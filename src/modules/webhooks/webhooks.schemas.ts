import { Type } from 'typebox'

const Nullable = <T extends Parameters<typeof Type.Union>[0][number]>(t: T) => Type.Union([t, Type.Null()])
const DateTime = Type.String({ format: 'date-time' })

export const Id = Type.Object({ id: Type.String({ format: 'uuid' }) }, { additionalProperties: false })

export const EventTypeSchema = Type.String({
  pattern: '^[a-z][a-z0-9_.:-]{0,99}$',
  description:
    'Lower case letters, digits and "_", ".", ":", "-", starting with a letter, e.g. invoice.paid.',
})

const EventPattern = Type.String({
  pattern: '^(\\*|[a-z][a-z0-9_.:-]{0,99}|[a-z][a-z0-9_.:-]{0,97}[.:]\\*)$',
  description:
    'An exact event type, "*" for every event, or a prefix ending in ".*" or ":*" (invoice.* matches invoice.paid).',
})

const Url = Type.String({
  minLength: 1,
  maxLength: 2048,
  description:
    'Where events are POSTed: https (http only with PLINTH_WEBHOOKS_ALLOW_HTTP), no credentials, a host that resolves to public addresses only (unless PLINTH_WEBHOOKS_ALLOW_PRIVATE).',
})
const EventTypes = Type.Array(EventPattern, { minItems: 1, maxItems: 50, uniqueItems: true })
const Description = Type.String({ maxLength: 500 })

export const SubscriptionSchema = Type.Object({
  id: Type.String({ format: 'uuid' }),
  url: Type.String(),
  eventTypes: Type.Array(Type.String()),
  description: Nullable(Type.String()),
  active: Type.Boolean(),
  createdBy: Nullable(Type.String()),
  createdAt: DateTime,
  updatedAt: DateTime,
})

export const CreatedSubscriptionSchema = Type.Intersect([
  SubscriptionSchema,
  Type.Object({
    secret: Type.String({
      description: 'The signing secret, shown this once: receivers verify plinth-signature with it.',
    }),
  }),
])

export const SubscriptionCreateBody = Type.Object(
  {
    url: Url,
    eventTypes: EventTypes,
    secret: Type.Optional(
      Type.String({
        minLength: 16,
        maxLength: 256,
        pattern: '^[\\x21-\\x7e]+$',
        description:
          'The signing secret (16-256 printable ASCII characters); 32 random bytes, base64url, when absent.',
      }),
    ),
    description: Type.Optional(Description),
    active: Type.Optional(Type.Boolean({ default: true })),
  },
  { additionalProperties: false },
)

export const SubscriptionPatchBody = Type.Object(
  {
    url: Type.Optional(Url),
    eventTypes: Type.Optional(EventTypes),
    description: Type.Optional(Nullable(Description)),
    active: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false, minProperties: 1 },
)

export const DeliverySchema = Type.Object({
  id: Type.String({ format: 'uuid', description: 'The plinth-delivery header of this attempt' }),
  eventId: Type.String({ format: 'uuid' }),
  eventType: Type.String(),
  jobId: Nullable(Type.String({ description: 'The delivery job (GET /api/v1/jobs/{id})' })),
  attempt: Type.Integer({ minimum: 1 }),
  status: Type.Union([Type.Literal('succeeded'), Type.Literal('failed')]),
  responseStatus: Nullable(Type.Integer()),
  error: Nullable(Type.String()),
  durationMs: Type.Integer(),
  createdAt: DateTime,
})

export const DeliveryListQuery = Type.Object(
  {
    limit: Type.Integer({ minimum: 1, maximum: 200, default: 50 }),
    cursor: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
    eventId: Type.Optional(Type.String({ format: 'uuid' })),
  },
  { additionalProperties: false },
)

export const EmitBody = Type.Object(
  {
    type: EventTypeSchema,
    data: Type.Unknown({ description: 'Any JSON value; receivers get it as `data`.' }),
    id: Type.Optional(
      Type.String({
        format: 'uuid',
        description: 'The event id; emitting the same id again queues no second delivery to a subscription.',
      }),
    ),
  },
  { additionalProperties: false },
)

export const Emitted = Type.Object({
  id: Type.String({ format: 'uuid' }),
  deliveries: Type.Integer({ description: 'Deliveries queued by this call' }),
})
