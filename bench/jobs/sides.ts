/**
 * What the jobs benchmark compares (see bench/README.md): Plinth's job layer, and raw pg-boss given
 * the same constructor and queue options that Plinth's engine gives it (src/modules/jobs/job-engine.ts,
 * `bossOptions` and `queueOptions` with the default policy), with two ways of running its workers.
 */

import type { ConstructorOptions, PgBoss, Queue } from 'pg-boss'
import { Type } from 'typebox'
import { defineJob } from '../../src/core/jobs.ts'
import type { PlinthModule } from '../../src/core/module.ts'

/** The queue (and Plinth job type) every side uses. */
export const JOB = 'bench.noop'

export interface Settings {
  readonly databaseUrl: string
  /** Jobs pre-filled for the throughput phase. */
  readonly jobs: number
  /** Jobs one process runs at once: Plinth's PLINTH_JOBS_CONCURRENCY, pg-boss' localConcurrency. */
  readonly concurrency: number
  readonly pollSeconds: number
  readonly monitorSeconds: number
  /** Paced enqueue of the latency phase: jobs per second, for this many seconds. */
  readonly rate: number
  readonly seconds: number
  /** Jobs per fetch of the batch side. */
  readonly batchSize: number
}

export interface LatencyFigures {
  readonly jobs: number
  readonly p50Ms: number
  readonly p99Ms: number
  readonly maxMs: number
}

export interface SideResult {
  readonly side: SideName
  readonly setupSeconds: number
  readonly throughput: { readonly jobs: number; readonly seconds: number; readonly jobsPerSecond: number }
  readonly latency: LatencyFigures & { readonly achievedRate: number }
}

/** Plinth's no-op job type, with the default policy. */
export const noopModule: PlinthModule = {
  name: 'bench-jobs',
  jobs: () => [
    defineJob({
      name: JOB,
      description: 'Does nothing (bench/jobs).',
      payload: Type.Object({}),
      handler() {},
    }),
  ],
}

/** Plinth's engine in the `worker` role on PostgreSQL, with PLINTH_JOBS_DB_POOL's default of 4. */
export function bossConstructorOptions(s: Settings): ConstructorOptions {
  return {
    migrate: true,
    supervise: true,
    schedule: true,
    monitorIntervalSeconds: s.monitorSeconds,
    superviseIntervalSeconds: s.monitorSeconds,
    cronWorkerIntervalSeconds: Math.min(5, Math.max(1, s.monitorSeconds)),
    cronMonitorIntervalSeconds: Math.min(30, Math.max(1, s.monitorSeconds)),
    warningQueueSize: 100_000,
    max: 4,
    application_name: 'bench-boss',
    useListenNotify: true,
    connectionTimeoutMillis: 5000,
  }
}

/** The queue options of Plinth's default job policy (3 retries, 5 min timeout, 30 s lease …). */
export function bossQueueOptions(): Omit<Queue, 'name'> {
  return {
    retryLimit: 3,
    retryDelay: 5,
    retryBackoff: true,
    retryDelayMax: 3600,
    expireInSeconds: 300,
    deleteAfterSeconds: 7 * 86_400,
    heartbeatSeconds: 30,
    deadLetter: `${JOB}.dead`,
  }
}

/** The same polling as Plinth's workers: the poll interval, and a 5 s backstop while NOTIFY works. */
const polling = (s: Settings) => ({
  pollingIntervalSeconds: s.pollSeconds,
  notifyPollingIntervalSeconds: Math.max(s.pollSeconds, 5),
})

/** Starts a raw side's workers on `boss` with a no-op handler. */
type StartWorkers = (boss: PgBoss, s: Settings) => Promise<void>

export const SIDES: Record<'plinth' | 'pg-boss' | 'pg-boss-batch', { label: string; start?: StartWorkers }> =
  {
    /** Plinth's job layer: one work() per unit of concurrency, batch 1, re-fetch after each job. */
    plinth: { label: 'plinth' },
    /**
     * pg-boss driven the way Plinth drives it: one `work()` per unit of concurrency, one job per
     * fetch, and a handler that wakes its own worker (`notifyWorker`) so that it fetches again at once
     * instead of waiting out the poll. The same queries per job as Plinth: what differs is Plinth's own
     * layer (envelope, validation, logs, metrics). The target ratio is taken against this side.
     */
    'pg-boss': {
      label: 'pg-boss',
      async start(boss, s) {
        for (let i = 0; i < s.concurrency; i++) {
          let id: string | undefined
          id = await boss.work(JOB, { ...polling(s), batchSize: 1 }, async () => {
            if (id) boss.notifyWorker(id)
          })
        }
      },
    },
    /**
     * pg-boss tuned for throughput the idiomatic way: `localConcurrency` workers fetching and
     * completing `batchSize` jobs at a time, fetching again at once while batches come back full
     * (`burstWhenBatchFull`).
     */
    'pg-boss-batch': {
      label: 'pg-boss batch',
      async start(boss, s) {
        await boss.work(
          JOB,
          {
            ...polling(s),
            localConcurrency: s.concurrency,
            batchSize: s.batchSize,
            burstWhenBatchFull: true,
          },
          async () => {},
        )
      },
    },
  }

export type SideName = keyof typeof SIDES
