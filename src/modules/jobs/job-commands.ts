import type { PgBoss } from 'pg-boss'
import type { AuditCaller } from '../../core/audit.ts'
import { deadLetterQueue, type JobView } from '../../core/jobs.ts'
import { PlinthError } from '../../shared/errors.ts'
import { audited, bossDb, type EngineState, NIL_UUID, registered, requireBoss } from './engine-state.ts'

/**
 * Makes sure pg-boss knows the queue before a statement runs in one of our transactions: it would
 * otherwise look it up on another connection, which on the embedded database (one session, held by the transaction) waits for that transaction.
 */
async function knowQueue(b: PgBoss, name: string): Promise<void> {
  await b.findJobs(name, { id: NIL_UUID })
}

/** The job left the state it was read in before the command could run. */
const moved = (job: JobView, now: string | undefined, verb: string) =>
  new PlinthError(
    'PLINTH_JOB_STATE_CONFLICT',
    `The job was ${job.state} and became ${now ?? 'deleted'} before it could be ${verb}.`,
  )

/**
 * An administrator's commands on jobs and dead-letter queues. With a caller, each records its audit
 * row in the transaction of the change, after reading the job's state again under a row lock.
 */
export function createJobCommands(
  s: EngineState,
  parts: { get: (id: string) => Promise<JobView>; wake: (name: string) => void },
) {
  const { db, store } = s
  const { get: requireJob, wake: wakeLocal } = parts

  return {
    /**
     * Runs a failed or cancelled job again (a fresh set of retries); with a caller, `job:retried`
     * is recorded in the same transaction as pg-boss' update.
     */
    async retry(id: string, by?: AuditCaller): Promise<JobView> {
      const job = await requireJob(id)
      if (job.state !== 'failed' && job.state !== 'cancelled')
        throw new PlinthError(
          'PLINTH_JOB_STATE_CONFLICT',
          `The job is ${job.state}; only failed or cancelled jobs can be retried.`,
        )
      const b = requireBoss(s)
      await knowQueue(b, job.name)
      await db.kysely.transaction().execute(async (trx) => {
        // The state is read again under a row lock: the command and its audit row see the same job.
        const state = await store.lockState(trx, job.name, id)
        if (state !== 'failed' && state !== 'cancelled') throw moved(job, state, 'retried')
        const on = { db: bossDb(trx) }
        if (state === 'cancelled') await b.resume(job.name, id, on)
        else await b.retry(job.name, id, on)
        await audited(s, trx, by, 'job:retried', { type: 'job', id }, { name: job.name, from: state })
      })
      if (s.registry.has(job.name)) wakeLocal(job.name)
      return requireJob(id)
    },

    /** Cancels a job that has not started (or is waiting for a retry); with a caller, records `job:cancelled`. */
    async cancel(id: string, by?: AuditCaller): Promise<JobView> {
      const job = await requireJob(id)
      if (job.state !== 'created' && job.state !== 'retry')
        throw new PlinthError(
          'PLINTH_JOB_STATE_CONFLICT',
          `The job is ${job.state}; only waiting jobs can be cancelled.`,
        )
      const b = requireBoss(s)
      await knowQueue(b, job.name)
      await db.kysely.transaction().execute(async (trx) => {
        // The state is read again under a row lock (workers skip locked rows): a job a worker took
        // meanwhile is left alone.
        const state = await store.lockState(trx, job.name, id)
        if (state !== 'created' && state !== 'retry') throw moved(job, state, 'cancelled')
        await b.cancel(job.name, id, { db: bossDb(trx) })
        await audited(s, trx, by, 'job:cancelled', { type: 'job', id }, { name: job.name, from: state })
      })
      return requireJob(id)
    },

    /**
     * Deletes every job in a job type's dead-letter queue; returns how many. With a caller,
     * `job:dead-letters-purged` is recorded in the same transaction as the deletion.
     */
    async purgeDeadLetter(name: string, by?: AuditCaller): Promise<number> {
      const r = registered(s, name)
      if (!r.policy.deadLetter) return 0
      const b = requireBoss(s)
      const queue = deadLetterQueue(name)
      await knowQueue(b, queue)
      return db.kysely.transaction().execute(async (trx) => {
        let purged = 0
        let after: string | undefined
        for (;;) {
          const ids = await store.ids(queue, { limit: 1000, after }, trx)
          if (ids.length === 0) break
          await b.deleteJob(queue, ids, { db: bossDb(trx) })
          purged += ids.length
          after = ids.at(-1)
        }
        await audited(
          s,
          trx,
          by,
          'job:dead-letters-purged',
          { type: 'job-type', id: name },
          { queue, purged },
        )
        return purged
      })
    },

    /**
     * Moves the jobs of a dead-letter queue back to their job type, as new jobs; returns how many.
     * With a caller, `job:dead-letters-redriven` is recorded in the same transaction as the move.
     */
    async redriveDeadLetter(name: string, by?: AuditCaller): Promise<number> {
      const r = registered(s, name)
      if (!r.policy.deadLetter) return 0
      const b = requireBoss(s)
      const queue = deadLetterQueue(name)
      await knowQueue(b, queue)
      const count = await db.kysely.transaction().execute(async (trx) => {
        const n = await b.redrive(queue, { destination: name, limit: 10_000, db: bossDb(trx) })
        await audited(
          s,
          trx,
          by,
          'job:dead-letters-redriven',
          { type: 'job-type', id: name },
          { queue, moved: n },
        )
        return n
      })
      if (count > 0) wakeLocal(name)
      return count
    },
  }
}
