import type { PlinthModule } from '../../core/module.ts'
import './webhooks.tables.ts'
import { webhookDeliveryJob } from './delivery.ts'
import { webhookSecretColumn } from './encrypted-columns.ts'
import { createEventBus } from './event-bus.ts'
import createWebhooks from './migrations/0005-create-webhooks.ts'
import { webhooksPersonalData } from './webhooks.privacy.ts'
import { webhooksRetention } from './webhooks.retention.ts'
import { webhooksRoutes } from './webhooks.routes.ts'

/**
 * Outbound webhooks: subscriptions (`/api/v1/webhooks`), the `plinth.webhook-delivery` job that
 * posts each event signed and records every attempt, and `POST /api/v1/events`. It provides the
 * event bus (`ctx.events`), through which any module emits.
 */
export const webhooksModule: PlinthModule = {
  name: 'webhooks',
  migrations: { '0005-create-webhooks': createWebhooks },
  personalData: webhooksPersonalData,
  jobs: (ctx) => [webhookDeliveryJob(ctx)],
  routes: webhooksRoutes,
  encryptedColumns: [webhookSecretColumn],
  retention: (ctx) => webhooksRetention(ctx.config),
  provides: {
    events: (ctx) => ({
      value: createEventBus({ config: ctx.config, db: ctx.db, jobs: ctx.jobs, logger: ctx.logger }),
    }),
  },
}
