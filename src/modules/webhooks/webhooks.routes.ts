import { Type } from 'typebox'
import { auditCallerOf as callerOf } from '../../core/audit.ts'
import type { ModuleContext, PlinthApp } from '../../core/module.ts'
import {
  CreatedSubscriptionSchema,
  DeliveryListQuery,
  DeliverySchema,
  EmitBody,
  Emitted,
  Id,
  SubscriptionCreateBody,
  SubscriptionPatchBody,
  SubscriptionSchema,
} from './webhooks.schemas.ts'
import { createWebhooksService } from './webhooks.service.ts'

const manage = { permission: 'webhooks:manage' as const }
const notFound = { ...manage, errors: ['PLINTH_WEBHOOK_NOT_FOUND'] as const }

/** `/webhooks` (subscriptions and their delivery attempts) and `/events` (emit an event). */
export function webhooksRoutes(api: PlinthApp, ctx: ModuleContext): void {
  const service = createWebhooksService(ctx)
  const tags = ['webhooks']

  api.post(
    '/webhooks',
    {
      config: { ...manage, errors: ['PLINTH_WEBHOOK_URL_INVALID', 'PLINTH_EVENT_INVALID'] },
      schema: {
        tags,
        summary: 'Subscribe a URL to events (the signing secret is returned this once)',
        body: SubscriptionCreateBody,
        response: { 201: CreatedSubscriptionSchema },
      },
    },
    async (request, reply) => {
      const { subscription, secret } = await service.create(request.body, callerOf(request))
      reply.code(201)
      return { ...subscription, secret }
    },
  )

  api.get(
    '/webhooks',
    {
      config: manage,
      schema: {
        tags,
        summary: 'Webhook subscriptions (never their secrets)',
        response: { 200: Type.Object({ webhooks: Type.Array(SubscriptionSchema) }) },
      },
    },
    async () => ({ webhooks: await service.list() }),
  )

  api.get(
    '/webhooks/:id',
    {
      config: notFound,
      schema: {
        tags,
        summary: 'One webhook subscription',
        params: Id,
        response: { 200: SubscriptionSchema },
      },
    },
    async (request) => service.get(request.params.id),
  )

  api.patch(
    '/webhooks/:id',
    {
      config: {
        ...manage,
        errors: ['PLINTH_WEBHOOK_NOT_FOUND', 'PLINTH_WEBHOOK_URL_INVALID', 'PLINTH_EVENT_INVALID'],
      },
      schema: {
        tags,
        summary: 'Change the URL, event types, description, or pause (active: false) a subscription',
        params: Id,
        body: SubscriptionPatchBody,
        response: { 200: SubscriptionSchema },
      },
    },
    async (request) => service.update(request.params.id, request.body, callerOf(request)),
  )

  api.delete(
    '/webhooks/:id',
    {
      config: notFound,
      schema: {
        tags,
        summary: 'Delete a subscription and its delivery records (queued deliveries are dropped)',
        params: Id,
        response: { 204: Type.Null() },
      },
    },
    async (request, reply) => {
      await service.remove(request.params.id, callerOf(request))
      reply.code(204)
      return null
    },
  )

  api.get(
    '/webhooks/:id/deliveries',
    {
      config: notFound,
      schema: {
        tags,
        summary: 'Delivery attempts of a subscription, newest first, with a cursor',
        params: Id,
        querystring: DeliveryListQuery,
        response: {
          200: Type.Object({
            deliveries: Type.Array(DeliverySchema),
            nextCursor: Type.Union([Type.String(), Type.Null()]),
          }),
        },
      },
    },
    async (request) => service.deliveries(request.params.id, request.query),
  )

  api.post(
    '/events',
    {
      config: {
        permission: 'events:emit',
        errors: [
          'PLINTH_EVENT_INVALID',
          'PLINTH_JOBS_UNAVAILABLE',
          'PLINTH_JOB_QUEUE_FULL',
          'PLINTH_JOB_INPUT_INVALID',
        ],
      },
      schema: {
        tags,
        summary: 'Emit an event: one signed delivery is queued per matching active subscription',
        body: EmitBody,
        response: { 202: Emitted },
      },
    },
    async (request, reply) => {
      const { type, data, id } = request.body
      const result = await ctx.events.emit(type, data, { id, requestId: request.id })
      reply.code(202)
      return result
    },
  )
}
