import { Counter, Gauge, Histogram } from 'prom-client'
import type { Metrics } from '../../observability/metrics.ts'

export interface QueueDepth {
  readonly name: string
  readonly waiting: number
  readonly oldestAgeSeconds: number
}

export interface JobsMetrics {
  readonly enqueued: Counter<'name'>
  readonly started: Counter<'name'>
  readonly completed: Counter<'name'>
  readonly failed: Counter<'name'>
  readonly retried: Counter<'name'>
  readonly deadLettered: Counter<'name'>
  readonly duration: Histogram<'name' | 'outcome'>
  readonly schedulesCreated: Counter<'name'>
  readonly schedulesFired: Counter<'name'>
}

/**
 * The job metrics of one Plinth instance. Counters count what this process did (Prometheus sums
 * them across replicas); queue depth and the age of the oldest waiting job are read from the
 * database at scrape time (`depths`, which caches for a few seconds and keeps the last figures when
 * the database does not answer).
 */
export function createJobsMetrics(
  metrics: Metrics,
  depths: () => Promise<readonly QueueDepth[]>,
): JobsMetrics {
  const registers = [metrics.registry]
  const counter = (name: string, help: string) =>
    new Counter({ name, help, labelNames: ['name'] as const, registers })
  let last: readonly QueueDepth[] = []
  const read = async () => {
    try {
      last = await depths()
    } catch {
      // the database is away: keep the last figures (the database health check says why)
    }
    return last
  }
  new Gauge({
    name: 'plinth_job_queue_waiting',
    help: 'Jobs waiting to run (created or retrying, including those scheduled for later), by job type.',
    labelNames: ['name'] as const,
    registers,
    async collect() {
      this.reset()
      for (const q of await read()) this.set({ name: q.name }, q.waiting)
    },
  })
  new Gauge({
    name: 'plinth_job_queue_oldest_waiting_seconds',
    help: 'Age of the oldest job that could run now and has not started, by job type (0 when none).',
    labelNames: ['name'] as const,
    registers,
    async collect() {
      this.reset()
      for (const q of await read()) this.set({ name: q.name }, q.oldestAgeSeconds)
    },
  })
  return {
    enqueued: counter('plinth_jobs_enqueued_total', 'Jobs enqueued by this process, by job type.'),
    started: counter('plinth_jobs_started_total', 'Job attempts started by this process, by job type.'),
    completed: counter('plinth_jobs_completed_total', 'Jobs completed by this process, by job type.'),
    failed: counter(
      'plinth_jobs_failed_total',
      'Job attempts that failed (threw or timed out), by job type.',
    ),
    retried: counter('plinth_jobs_retried_total', 'Failed attempts that will be retried, by job type.'),
    deadLettered: counter(
      'plinth_jobs_dead_lettered_total',
      'Jobs that failed their last attempt (moved to the dead-letter queue when the type keeps one), by job type.',
    ),
    duration: new Histogram({
      name: 'plinth_job_duration_seconds',
      help: 'Run time of job attempts, by job type and outcome (completed or failed).',
      labelNames: ['name', 'outcome'] as const,
      buckets: [0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300],
      registers,
    }),
    schedulesCreated: counter(
      'plinth_schedules_created_total',
      'Schedules created through this process, by job type.',
    ),
    schedulesFired: counter(
      'plinth_schedules_fired_total',
      'Schedule ticks whose job this process started (first attempts only), by job type.',
    ),
  }
}
