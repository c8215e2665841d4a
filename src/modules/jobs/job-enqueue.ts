import { randomUUID } from 'node:crypto'
import type { Kysely } from 'kysely'
import type { EnqueueOptions, EnqueueResult } from '../../core/jobs.ts'
import type { PlinthTables } from '../../infra/db/tables.ts'
import { currentTraceparent } from '../../observability/tracing.ts'
import { PlinthError } from '../../shared/errors.ts'
import { fieldErrors } from '../../shared/validation.ts'
import {
  audited,
  bossDb,
  type EngineState,
  type JobEnvelope,
  type Registered,
  registered,
  requireBoss,
} from './engine-state.ts'
import { classifyEnqueueError } from './enqueue-errors.ts'

/** Turns pg-boss/driver failures into Plinth errors (see enqueue-errors.ts); PlinthErrors pass through. */
function engineError(err: unknown): Error {
  return classifyEnqueueError(err)
}

/**
 * The enqueue path: payload validation against the job type's schema, backpressure (a cached
 * count of waiting jobs), idempotency keys, the caller's transaction, and the audit row of an
 * administrator's enqueue. `wake` starts a local worker at once for a job visible now.
 */
export function createEnqueue(s: EngineState, wake: (name: string) => void) {
  const { config, db, store } = s

  async function depthOf(r: Registered, executor: Kysely<PlinthTables> | undefined): Promise<number> {
    const d = r.depth
    if (Date.now() - d.at < 1000) return d.count
    // Inside a caller's transaction, count through it: on the embedded database it holds the only
    // connection, and a count on another would wait for it forever.
    if (executor) return store.waiting(r.definition.name, r.policy.maxQueued, executor)
    d.refreshing ??= store
      .waiting(r.definition.name, r.policy.maxQueued)
      .then((count) => {
        r.depth = { count, at: Date.now() }
        return count
      })
      .finally(() => {
        d.refreshing = undefined
      })
    return d.refreshing
  }

  /** Throws `PLINTH_JOB_PAYLOAD_INVALID` (naming the fields) unless the payload matches the type's schema. */
  function validatePayload(name: string, payload: unknown): void {
    const r = registered(s, name)
    if (!r.validate(payload))
      throw new PlinthError('PLINTH_JOB_PAYLOAD_INVALID', undefined, {
        errors: fieldErrors('body', r.validate.errors ?? []).map((e) => ({
          ...e,
          field: e.field ? `payload.${e.field}` : 'payload',
        })),
      })
  }

  /** Enqueues without auditing (see `enqueue`). */
  async function enqueueJob(name: string, payload: unknown, options: EnqueueOptions): Promise<EnqueueResult> {
    const r = registered(s, name)
    validatePayload(name, payload)
    const b = requireBoss(s)
    if (options.overflow !== 'accept') {
      const waiting = await depthOf(r, options.db).catch((err: unknown) => {
        throw engineError(err)
      })
      if (waiting >= r.policy.maxQueued)
        throw new PlinthError('PLINTH_JOB_QUEUE_FULL', undefined, {
          headers: { 'retry-after': String(Math.max(1, Math.round(config.jobsMonitorInterval / 1000))) },
        })
    }
    const id = randomUUID()
    const traceparent = currentTraceparent()
    const meta = {
      ...(options.requestId ? { requestId: options.requestId } : {}),
      ...(options.idempotencyKey ? { key: options.idempotencyKey } : {}),
      ...(traceparent ? { traceparent } : {}),
    }
    const startAfter = options.runAt ?? (options.delay ? new Date(Date.now() + options.delay) : undefined)
    const send = (executor: Kysely<PlinthTables> | undefined) =>
      b.send(name, { payload, meta } satisfies JobEnvelope, {
        id,
        priority: options.priority ?? r.policy.priority,
        ...(startAfter ? { startAfter } : {}),
        ...(executor ? { db: bossDb(executor) } : {}),
      })

    let result: EnqueueResult
    try {
      if (options.idempotencyKey) {
        const key = options.idempotencyKey
        const inTransaction = async (trx: Kysely<PlinthTables>): Promise<EnqueueResult> => {
          const expiresAt = new Date(Date.now() + config.jobsIdempotencyWindow)
          const claimed = await trx
            .insertInto('job_idempotency_keys')
            .values({ job_name: name, key, job_id: id, expires_at: expiresAt })
            .onConflict((oc) =>
              oc
                .columns(['job_name', 'key'])
                .doUpdateSet({ job_id: id, expires_at: expiresAt })
                .where('job_idempotency_keys.expires_at', '<=', new Date()),
            )
            .returning('job_id')
            .executeTakeFirst()
          if (!claimed) {
            const existing = await trx
              .selectFrom('job_idempotency_keys')
              .select('job_id')
              .where('job_name', '=', name)
              .where('key', '=', key)
              .executeTakeFirstOrThrow()
            return { id: existing.job_id, created: false }
          }
          await send(trx)
          return { id, created: true }
        }
        result = options.db
          ? await inTransaction(options.db)
          : await db.kysely.transaction().execute((trx) => inTransaction(trx))
      } else {
        await send(options.db)
        result = { id, created: true }
      }
    } catch (err) {
      throw engineError(err)
    }
    if (result.created) {
      r.depth.count++
      s.m.enqueued.inc({ name })
      // Jobs enqueued in a caller's transaction are visible only after it commits; the poll finds them.
      if (!options.db) wake(name)
    }
    return result
  }

  return {
    validatePayload,

    async enqueue(name: string, payload: unknown, options: EnqueueOptions = {}): Promise<EnqueueResult> {
      const by = options.audit
      if (!by) return enqueueJob(name, payload, options)
      // The job and its audit row commit together, in the caller's transaction or one of our own.
      const run = async (trx: Kysely<PlinthTables>) => {
        const result = await enqueueJob(name, payload, { ...options, db: trx })
        if (result.created)
          await audited(
            s,
            trx,
            by,
            'job:enqueued',
            { type: 'job', id: result.id },
            {
              name,
              ...(options.priority !== undefined ? { priority: options.priority } : {}),
              ...(options.runAt ? { runAt: options.runAt.toISOString() } : {}),
              ...(options.delay ? { delayMs: options.delay } : {}),
              ...(options.idempotencyKey ? { idempotencyKey: true } : {}),
              ...(options.overflow === 'accept' ? { overflow: 'accept' } : {}),
            },
          )
        return result
      }
      if (options.db) return run(options.db)
      const result = await db.kysely.transaction().execute(run)
      if (result.created) wake(name)
      return result
    },
  }
}
