/**
 * The event contract the rest of Plinth depends on; the webhooks module (modules/webhooks)
 * implements it by queueing one signed delivery per matching subscription. It lives in core so
 * that the module context can name it without core depending on a module.
 */
import type { Kysely } from 'kysely'
import type { PlinthTables } from '../infra/db/tables.ts'

/** An event type: lower case, starting with a letter, e.g. `invoice.paid` or `user:created`. */
export const EVENT_TYPE = /^[a-z][a-z0-9_.:-]{0,99}$/

export interface EmitOptions {
  /**
   * The event's id (a UUID); one is generated when absent. Emitting the same id again within
   * `PLINTH_JOBS_IDEMPOTENCY_WINDOW` queues no second delivery to a subscription that already has one.
   */
  readonly id?: string | undefined
  /** Put on the delivery jobs and their log lines. */
  readonly requestId?: string | undefined
  /** A Kysely transaction: the deliveries exist only if it commits. */
  readonly db?: Kysely<PlinthTables> | undefined
}

export interface EmitResult {
  readonly id: string
  /** Deliveries this call queued (0 when no active subscription matches, or on a re-emit). */
  readonly deliveries: number
}

export interface EventBus {
  /**
   * Emits an event: for each active webhook subscription whose event types match `type`, one
   * delivery job is queued (all of them in one transaction, the caller's when `db` is given).
   *
   * @throws PlinthError `PLINTH_EVENT_INVALID` when the type or id is malformed;
   *   `PLINTH_JOB_QUEUE_FULL` / `PLINTH_JOBS_UNAVAILABLE` from the job engine.
   * @example
   * await ctx.events.emit('invoice.paid', { invoiceId }, { requestId: request.id })
   */
  emit(type: string, data: unknown, options?: EmitOptions): Promise<EmitResult>
}
