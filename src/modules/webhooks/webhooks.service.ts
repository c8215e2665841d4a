import { randomBytes, randomUUID } from 'node:crypto'
import type { Selectable } from 'kysely'
import { type AuditCaller, type AuditEntry, auditDiff } from '../../core/audit.ts'
import type { ModuleContext } from '../../core/module.ts'
import { PlinthError } from '../../shared/errors.ts'
import { urlPolicy } from './delivery.ts'
import { webhookSecretColumn } from './encrypted-columns.ts'
import { assertWebhookUrl } from './url-guard.ts'
import type { WebhookDeliveriesTable, WebhookSubscriptionsTable } from './webhooks.tables.ts'

export interface SubscriptionView {
  readonly id: string
  readonly url: string
  readonly eventTypes: string[]
  readonly description: string | null
  readonly active: boolean
  readonly createdBy: string | null
  readonly createdAt: string
  readonly updatedAt: string
}

export interface DeliveryView {
  readonly id: string
  readonly eventId: string
  readonly eventType: string
  readonly jobId: string | null
  readonly attempt: number
  readonly status: 'succeeded' | 'failed'
  readonly responseStatus: number | null
  readonly error: string | null
  readonly durationMs: number
  readonly createdAt: string
}

export interface SubscriptionInput {
  readonly url: string
  readonly eventTypes: readonly string[]
  readonly secret?: string | undefined
  readonly description?: string | undefined
  readonly active?: boolean | undefined
}

export interface SubscriptionPatch {
  readonly url?: string | undefined
  readonly eventTypes?: readonly string[] | undefined
  readonly description?: string | null | undefined
  readonly active?: boolean | undefined
}

/** Who asks, for `created_by` and the audit log. */
export type Caller = AuditCaller

type SubscriptionRow = Omit<Selectable<WebhookSubscriptionsTable>, 'secret'>
const COLUMNS = [
  'id',
  'url',
  'event_types',
  'description',
  'active',
  'created_by',
  'created_at',
  'updated_at',
] as const

const iso = (d: Date | string) => new Date(d).toISOString()

function view(row: SubscriptionRow): SubscriptionView {
  return {
    id: row.id,
    url: row.url,
    eventTypes: row.event_types,
    description: row.description,
    active: row.active,
    createdBy: row.created_by,
    createdAt: iso(row.created_at),
    updatedAt: iso(row.updated_at),
  }
}

function deliveryView(row: Selectable<WebhookDeliveriesTable>): DeliveryView {
  return {
    id: row.id,
    eventId: row.event_id,
    eventType: row.event_type,
    jobId: row.job_id,
    attempt: row.attempt,
    status: row.status,
    responseStatus: row.response_status,
    error: row.error,
    durationMs: row.duration_ms,
    createdAt: iso(row.created_at),
  }
}

/** What the audit log keeps of a subscription: never the secret, and of the URL only its origin (paths and queries often carry tokens). */
function audited(s: {
  url: string
  event_types: readonly string[]
  description: string | null
  active: boolean
}) {
  return {
    origin: new URL(s.url).origin,
    eventTypes: [...s.event_types],
    description: s.description,
    active: s.active,
  }
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

function decodeCursor(cursor: string): { at: Date; id: string } {
  const [at = '', id = ''] = Buffer.from(cursor, 'base64url').toString('utf8').split('|')
  const date = new Date(at)
  if (Number.isNaN(date.getTime()) || !UUID.test(id))
    throw new PlinthError('PLINTH_HTTP_INVALID_REQUEST', 'The cursor is not one this API returned.', {
      errors: [{ in: 'querystring', field: 'cursor', message: 'is invalid' }],
    })
  return { at: date, id }
}

/**
 * Webhook subscriptions: create (the secret is returned once, and stored encrypted), list,
 * change, delete, and the recorded delivery attempts. Every change is audited in its transaction.
 */
export function createWebhooksService(ctx: ModuleContext) {
  const db = ctx.db.kysely
  const policy = urlPolicy(ctx.config)

  const auditEntry = (caller: Caller, action: string, id: string, rest: Partial<AuditEntry>): AuditEntry => ({
    action,
    actor: caller.actor,
    target: { type: 'webhook', id },
    outcome: 'success',
    ip: caller.ip,
    userAgent: caller.userAgent,
    requestId: caller.requestId,
    ...rest,
  })

  async function get(id: string): Promise<SubscriptionView> {
    const row = UUID.test(id)
      ? await db.selectFrom('webhook_subscriptions').select(COLUMNS).where('id', '=', id).executeTakeFirst()
      : undefined
    if (!row) throw new PlinthError('PLINTH_WEBHOOK_NOT_FOUND')
    return view(row)
  }

  return {
    get,

    /** Creates a subscription; `secret` is the signing secret, generated (32 random bytes, base64url) when not given. */
    async create(
      input: SubscriptionInput,
      caller: Caller,
    ): Promise<{ subscription: SubscriptionView; secret: string }> {
      const url = await assertWebhookUrl(input.url, policy)
      const id = randomUUID()
      const secret = input.secret ?? randomBytes(32).toString('base64url')
      const eventTypes = [...new Set(input.eventTypes)]
      const row = await db.transaction().execute(async (trx) => {
        const inserted = await trx
          .insertInto('webhook_subscriptions')
          .values({
            id,
            url: url.href,
            event_types: eventTypes,
            secret: ctx.keyring.encrypt(secret, webhookSecretColumn.aad(id)),
            description: input.description ?? null,
            active: input.active ?? true,
            created_by: caller.actor.id ?? null,
            updated_at: new Date(),
          })
          .returning(COLUMNS)
          .executeTakeFirstOrThrow()
        await ctx.audit.record(trx, auditEntry(caller, 'webhook:created', id, { details: audited(inserted) }))
        return inserted
      })
      return { subscription: view(row), secret }
    },

    async list(): Promise<SubscriptionView[]> {
      const rows = await db
        .selectFrom('webhook_subscriptions')
        .select(COLUMNS)
        .orderBy('created_at')
        .orderBy('id')
        .execute()
      return rows.map(view)
    },

    async update(id: string, patch: SubscriptionPatch, caller: Caller): Promise<SubscriptionView> {
      await get(id)
      const url = patch.url === undefined ? undefined : await assertWebhookUrl(patch.url, policy)
      const row = await db.transaction().execute(async (trx) => {
        const before = await trx
          .selectFrom('webhook_subscriptions')
          .select(COLUMNS)
          .where('id', '=', id)
          .forUpdate()
          .executeTakeFirst()
        if (!before) throw new PlinthError('PLINTH_WEBHOOK_NOT_FOUND')
        const after = await trx
          .updateTable('webhook_subscriptions')
          .set({
            ...(url ? { url: url.href } : {}),
            ...(patch.eventTypes ? { event_types: [...new Set(patch.eventTypes)] } : {}),
            ...(patch.description !== undefined ? { description: patch.description } : {}),
            ...(patch.active !== undefined ? { active: patch.active } : {}),
            updated_at: new Date(),
          })
          .where('id', '=', id)
          .returning(COLUMNS)
          .executeTakeFirstOrThrow()
        const changes = auditDiff(
          { ...audited(before), urlChanged: false },
          { ...audited(after), urlChanged: before.url !== after.url },
        )
        if (changes) await ctx.audit.record(trx, auditEntry(caller, 'webhook:updated', id, { changes }))
        return after
      })
      return view(row)
    },

    /** Deletes a subscription and its recorded deliveries; queued deliveries then complete without sending. */
    async remove(id: string, caller: Caller): Promise<void> {
      if (!UUID.test(id)) throw new PlinthError('PLINTH_WEBHOOK_NOT_FOUND')
      await db.transaction().execute(async (trx) => {
        const gone = await trx
          .deleteFrom('webhook_subscriptions')
          .where('id', '=', id)
          .returning(['url', 'event_types', 'description', 'active'])
          .executeTakeFirst()
        if (!gone) throw new PlinthError('PLINTH_WEBHOOK_NOT_FOUND')
        await ctx.audit.record(trx, auditEntry(caller, 'webhook:deleted', id, { details: audited(gone) }))
      })
    },

    /** Delivery attempts of a subscription, newest first, by pages. */
    async deliveries(
      id: string,
      query: { limit: number; cursor?: string | undefined; eventId?: string | undefined },
    ): Promise<{ deliveries: DeliveryView[]; nextCursor: string | null }> {
      await get(id)
      let q = db
        .selectFrom('webhook_deliveries')
        .selectAll()
        .where('subscription_id', '=', id)
        .orderBy('created_at', 'desc')
        .orderBy('id', 'desc')
        .limit(query.limit + 1)
      if (query.eventId) q = q.where('event_id', '=', query.eventId)
      if (query.cursor) {
        const c = decodeCursor(query.cursor)
        q = q.where((eb) =>
          eb.or([eb('created_at', '<', c.at), eb.and([eb('created_at', '=', c.at), eb('id', '<', c.id)])]),
        )
      }
      const rows = await q.execute()
      const page = rows.slice(0, query.limit)
      const last = page.at(-1)
      const nextCursor =
        rows.length > query.limit && last
          ? Buffer.from(`${iso(last.created_at)}|${last.id}`).toString('base64url')
          : null
      return { deliveries: page.map(deliveryView), nextCursor }
    },
  }
}

export type WebhooksService = ReturnType<typeof createWebhooksService>
