import { setTimeout as sleep } from 'node:timers/promises'
import { Type } from 'typebox'
import { defineJob } from '../../src/core/jobs.ts'
import type { PlinthModule } from '../../src/core/module.ts'

export interface Attempt {
  readonly id: string
  readonly name: string
  readonly attempt: number
  readonly at: number
  readonly requestId: string | undefined
  readonly scheduleId: string | undefined
  payload: unknown
  aborted?: string
}

/**
 * Job types for tests, recording every attempt in memory:
 * - `kit.record` `{ tag }` completes at once;
 * - `kit.flaky` `{ failTimes }` fails its first `failTimes` attempts (1 s retry delay, backoff);
 * - `kit.doomed` always fails (one retry, dead-lettered);
 * - `kit.slow` `{ ms }` waits, or until its signal aborts (timeout 1 s);
 * - `kit.sleepy` `{ ms }` waits (timeout 60 s, two retries), recording the ids that finished;
 * - `kit.bounded` `{}` takes at most 3 waiting jobs.
 */
export function jobsKit() {
  const attempts: Attempt[] = []
  const finished: string[] = []
  const record = (a: Omit<Attempt, 'at'>) => {
    const entry = { ...a, at: Date.now() }
    attempts.push(entry)
    return entry
  }
  const module: PlinthModule = {
    name: 'jobs-kit',
    jobs: () => [
      defineJob({
        name: 'kit.record',
        payload: Type.Object({ tag: Type.String() }, { additionalProperties: false }),
        async handler(job) {
          record({ ...job, payload: job.payload })
          job.logger.info({ tag: job.payload.tag }, 'kit record')
          return { tag: job.payload.tag }
        },
      }),
      defineJob({
        name: 'kit.flaky',
        payload: Type.Object({ failTimes: Type.Integer({ minimum: 0 }) }),
        policy: { retryLimit: 3, retryDelay: 1, backoff: true },
        async handler(job) {
          record({ ...job, payload: job.payload })
          job.logger.info('kit flaky attempt')
          if (job.attempt <= job.payload.failTimes) throw new Error(`planned failure ${job.attempt}`)
        },
      }),
      defineJob({
        name: 'kit.doomed',
        payload: Type.Object({}),
        policy: { retryLimit: 1, retryDelay: 1, backoff: false },
        async handler(job) {
          record({ ...job, payload: job.payload })
          throw new Error('doomed to fail')
        },
      }),
      defineJob({
        name: 'kit.slow',
        payload: Type.Object({ ms: Type.Integer() }),
        policy: { timeout: 1, retryLimit: 0, deadLetter: false },
        async handler(job) {
          const entry = record({ ...job, payload: job.payload })
          try {
            await sleep(job.payload.ms, undefined, { signal: job.signal })
          } catch (err) {
            entry.aborted = String((job.signal.reason as Error)?.message ?? err)
            throw err
          }
        },
      }),
      defineJob({
        name: 'kit.sleepy',
        payload: Type.Object({ ms: Type.Integer() }),
        policy: { timeout: 60, retryLimit: 2, retryDelay: 1, backoff: false },
        async handler(job) {
          const entry = record({ ...job, payload: job.payload })
          try {
            await sleep(job.payload.ms, undefined, { signal: job.signal })
            finished.push(job.id)
          } catch (err) {
            entry.aborted = String((job.signal.reason as Error)?.message ?? err)
            throw err
          }
        },
      }),
      defineJob({
        name: 'kit.bounded',
        payload: Type.Object({}),
        policy: { maxQueued: 3 },
        handler() {},
      }),
    ],
  }
  return {
    module,
    attempts,
    /** Ids of `kit.sleepy` jobs whose sleep ran to the end. */
    finished,
    of: (id: string) => attempts.filter((a) => a.id === id),
  }
}
