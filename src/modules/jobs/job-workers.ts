import { sql } from 'kysely'
import type { Job as BossJob, PgBoss } from 'pg-boss'
import type { Logger } from 'pino'
import { contextFromTraceparent, SpanKind, withSpan } from '../../observability/tracing.ts'
import type { EngineState, JobEnvelope, Registered } from './engine-state.ts'
import { JOBS_SCHEMA } from './job-store.ts'

/**
 * On the embedded database each worker polls only this rarely, as a backstop: one query per
 * `PLINTH_JOBS_POLL_INTERVAL` finds the job types with work due and wakes their workers instead
 * (see `start`).
 */
const EMBEDDED_BACKSTOP_SECONDS = 300

/**
 * The workers of a `worker`-mode engine: one pg-boss `work()` per unit of concurrency of every job
 * type, each attempt run with its correlated logger and metrics. `wake` nudges a local worker of a
 * type to fetch now instead of at its next poll.
 *
 * On the embedded database (one PGlite session that every query takes in turn, requests' too)
 * the workers do not poll each on their own: ~35 workers polling every second were ~15 fetch
 * queries a second, each taking the session — about a quarter of it under load (decision 0031).
 * One query per poll interval lists the job types with a job due (created or retrying, start time
 * reached) and wakes as many of their workers as there are such jobs; each worker still polls
 * every EMBEDDED_BACKSTOP_SECONDS.
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

  let dueTimer: NodeJS.Timeout | undefined

  /** One query for every job type: which have jobs due, and how many; wakes that many of their workers. */
  async function wakeDue() {
    const names = [...workerIds.keys()]
    if (!s.running || names.length === 0) return
    const { rows } = await sql<{ name: string; n: number }>`
      select name, count(*)::int as n from ${sql.table(`${JOBS_SCHEMA}.job`)}
       where state < 'active' and not blocked and start_after <= ${sql.raw(JOBS_SCHEMA)}.job_now()
         and name = any(${names})
       group by name`.execute(s.db.kysely)
    for (const { name, n } of rows) {
      const count = Math.min(n, workerIds.get(name)?.length ?? 0)
      for (let i = 0; i < count; i++) wake(name)
    }
  }

  function pollDue() {
    dueTimer = setTimeout(() => {
      dueTimer = undefined
      if (!s.running) return
      wakeDue()
        .catch((err: unknown) => log.debug({ err }, 'could not look for due jobs'))
        .finally(() => {
          if (s.running) pollDue()
        })
    }, config.jobsPollInterval)
    dueTimer.unref()
  }

  function stop() {
    clearTimeout(dueTimer)
    dueTimer = undefined
  }

  async function start(b: PgBoss) {
    const embedded = s.db.kind === 'embedded'
    const pollingIntervalSeconds = embedded
      ? Math.max(EMBEDDED_BACKSTOP_SECONDS, config.jobsPollInterval / 1000)
      : config.jobsPollInterval / 1000
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
    if (embedded) pollDue()
  }

  return { wake, start, stop }
}
