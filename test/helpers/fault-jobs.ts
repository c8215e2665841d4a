import { setTimeout as sleep } from 'node:timers/promises'
import { type Kysely, sql } from 'kysely'
import { Type } from 'typebox'
import { defineJob } from '../../src/core/jobs.ts'
import type { PlinthModule } from '../../src/core/module.ts'

/**
 * The side-effect tables of the job fault tests (test/jobs-fault.test.ts), created by the driver
 * before any worker starts:
 * - `fault_effects`: one row per attempt that reached its side effect, with NO unique constraint,
 *   so a job whose effect ran twice (at-least-once delivery) shows up as two rows;
 * - `fault_effects_once`: the same effect made idempotent the way a real handler should, keyed by
 *   the job id (`on conflict do nothing`): exactly one row per job however often it ran;
 * - `fault_starts`: one row per attempt as it starts (which process, when), for recovery timing.
 */
export async function createFaultTables(db: Kysely<unknown>): Promise<void> {
  await sql`create table fault_effects (
      job_id uuid not null, n integer not null, attempt integer not null, pid integer not null,
      at timestamptz not null default clock_timestamp())`.execute(db)
  await sql`create table fault_effects_once (
      job_id uuid primary key, n integer not null, pid integer not null,
      at timestamptz not null default clock_timestamp())`.execute(db)
  await sql`create table fault_starts (
      job_id uuid not null, attempt integer not null, pid integer not null, at timestamptz not null)`.execute(
    db,
  )
}

/**
 * Job types of the fault tests. Both write through `db`, the worker's own Kysely handle.
 * - `fault.work` `{ n }`: waits 0–20 ms, then records its side effect twice (see createFaultTables);
 * - `fault.long` `{ ms }`: records its start, waits `ms` on its first attempt only (later attempts
 *   finish at once, so the test need not wait the whole time again), then records its effect.
 * `fault.long` keeps the default policy (3 retries, first retry after 5–10 s): what an application
 * gets. `fault.work` retries after 1 s without backoff, and up to 20 times: under a kill every second
 * a job may be caught in several kills in a row, and the test is about losing none, not about the
 * retry budget (nor about waiting out a backoff of 20–40 s after its third kill).
 */
export function faultModule(db: () => Kysely<unknown>): PlinthModule {
  const effect = async (id: string, n: number, attempt: number) => {
    await sql`insert into fault_effects (job_id, n, attempt, pid)
      values (${id}, ${n}, ${attempt}, ${process.pid})`.execute(db())
    // The idempotent form: a second run of the same job changes nothing.
    await sql`insert into fault_effects_once (job_id, n, pid) values (${id}, ${n}, ${process.pid})
      on conflict (job_id) do nothing`.execute(db())
  }
  return {
    name: 'fault-jobs',
    jobs: () => [
      defineJob({
        name: 'fault.work',
        payload: Type.Object({ n: Type.Integer({ minimum: 0 }) }, { additionalProperties: false }),
        policy: { retryLimit: 20, retryDelay: 1, backoff: false },
        async handler(job) {
          await sleep(Math.floor(Math.random() * 21), undefined, { signal: job.signal })
          await effect(job.id, job.payload.n, job.attempt)
          return { n: job.payload.n }
        },
      }),
      defineJob({
        name: 'fault.long',
        payload: Type.Object({ ms: Type.Integer({ minimum: 0 }) }, { additionalProperties: false }),
        async handler(job) {
          await sql`insert into fault_starts (job_id, attempt, pid, at)
            values (${job.id}, ${job.attempt}, ${process.pid}, ${new Date()})`.execute(db())
          if (job.attempt === 1) await sleep(job.payload.ms, undefined, { signal: job.signal })
          await effect(job.id, 0, job.attempt)
          return { pid: process.pid }
        },
      }),
    ],
  }
}
