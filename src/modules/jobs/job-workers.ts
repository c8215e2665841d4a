import type { Job as BossJob, PgBoss } from 'pg-boss'
import type { Logger } from 'pino'
import { contextFromTraceparent, SpanKind, withSpan } from '../../observability/tracing.ts'
import type { EngineState, JobEnvelope, Registered } from './engine-state.ts'

/**
 * The workers of a `worker`-mode engine: one pg-boss `work()` per unit of concurrency of every job
 * type, each attempt run with its correlated logger and metrics. `wake` nudges a local worker of a
 * type to fetch now instead of at its next poll.
 */
export function createJobWorkers(s: EngineState) {
  const { config, log, m } = s
  const workerIds = new Map<string, string[]>()
  let nextWake = 0

  function wake(name: string) {
    const ids = workerIds.get(name)
    if (!s.boss || !ids?.length) return
    s.boss.notifyWorker(ids[nextWake++ % ids.length] as string)
  }

  async function runAttempt(r: Registered, job: BossJob<JobEnvelope>, workerId: () => string | undefined) {
    const name = r.definition.name
    const envelope = job.data ?? { payload: null, meta: {} }
    const meta = envelope.meta ?? {}
    const attempt = job.retryCount + 1
    const jobLog = log.child({
      jobId: job.id,
      job: name,
      attempt,
      ...(meta.requestId ? { requestId: meta.requestId } : {}),
    })
    m.started.inc({ name })
    if (meta.scheduleId && attempt === 1) m.schedulesFired.inc({ name })
    jobLog.debug('job started')
    // One CONSUMER span per attempt, a child of the span that enqueued the job (the request's,
    // when a request did): the trace goes on into the job and what it calls (webhooks, mail).
    return withSpan(
      `job ${name}`,
      {
        kind: SpanKind.CONSUMER,
        parent: contextFromTraceparent(meta.traceparent),
        attributes: {
          'plinth.job.id': job.id,
          'plinth.job.name': name,
          'plinth.job.attempt': attempt,
          ...(meta.requestId ? { 'plinth.request_id': meta.requestId } : {}),
          ...(meta.scheduleId ? { 'plinth.schedule_id': meta.scheduleId } : {}),
        },
      },
      () => runHandler(r, job, workerId, jobLog, attempt),
    )
  }

  async function runHandler(
    r: Registered,
    job: BossJob<JobEnvelope>,
    workerId: () => string | undefined,
    jobLog: Logger,
    attempt: number,
  ) {
    const name = r.definition.name
    const envelope = job.data ?? { payload: null, meta: {} }
    const meta = envelope.meta ?? {}
    const startedAt = performance.now()
    try {
      const output = await r.definition.handler({
        id: job.id,
        name,
        payload: envelope.payload,
        attempt,
        requestId: meta.requestId,
        scheduleId: meta.scheduleId,
        signal: job.signal,
        logger: jobLog,
      })
      const seconds = (performance.now() - startedAt) / 1000
      m.completed.inc({ name })
      m.duration.observe({ name, outcome: 'completed' }, seconds)
      jobLog.info({ durationMs: Math.round(seconds * 1000) }, 'job completed')
      return output === undefined || output === null || typeof output === 'object'
        ? output
        : { value: output }
    } catch (err) {
      const seconds = (performance.now() - startedAt) / 1000
      m.failed.inc({ name })
      m.duration.observe({ name, outcome: 'failed' }, seconds)
      const final = attempt > r.policy.retryLimit
      if (final) m.deadLettered.inc({ name })
      else m.retried.inc({ name })
      jobLog[final ? 'error' : 'warn'](
        { err, durationMs: Math.round(seconds * 1000), willRetry: !final },
        final ? 'job failed for the last time' : 'job attempt failed',
      )
      if (final) s.errorReports?.report({ error: err, source: 'job', where: name, requestId: meta.requestId })
      throw err
    } finally {
      // More work is likely waiting: fetch again now instead of after the poll interval.
      const id = workerId()
      if (id && s.running) s.boss?.notifyWorker(id)
    }
  }

  async function start(b: PgBoss) {
    const pollingIntervalSeconds = config.jobsPollInterval / 1000
    for (const [name, r] of s.registry) {
      const ids: string[] = []
      for (let i = 0; i < r.policy.concurrency; i++) {
        let id: string | undefined
        id = await b.work<JobEnvelope>(
          name,
          {
            batchSize: 1,
            pollingIntervalSeconds,
            // NOTIFY wakes workers for new jobs, not for delayed jobs and retries coming due: keep
            // polling at the configured pace so those start on time.
            notifyPollingIntervalSeconds: pollingIntervalSeconds,
          },
          async ([job]) => (job ? runAttempt(r, job, () => id) : undefined),
        )
        ids.push(id)
      }
      workerIds.set(name, ids)
    }
  }

  return { wake, start }
}
