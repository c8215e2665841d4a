import { randomUUID } from 'node:crypto'
import { CompiledQuery, type Kysely } from 'kysely'
import { type Job as BossJob, type ConstructorOptions, type Db, PgBoss } from 'pg-boss'
import type { Logger } from 'pino'
import type { PlinthConfig } from '../../config/config.schema.ts'
import { type Audit, type AuditCaller, type AuditEntry, callerEntry } from '../../core/audit.ts'
import { PlinthError } from '../../core/errors.ts'
import { fieldErrors } from '../../http/plugins/problem-json.ts'
import { createStrictAjv } from '../../http/validation.ts'
import type { Database } from '../../infra/db/create-db.ts'
import type { PlinthTables } from '../../infra/db/tables.ts'
import type { Metrics } from '../../observability/metrics.ts'
import { classifyEnqueueError } from './enqueue-errors.ts'
import { deadLetterQueue, type JobDefinition, type ResolvedPolicy, resolvePolicy } from './job-definition.ts'
import { createJobStore, JOBS_SCHEMA, type JobFilter, type JobStore, type JobView } from './job-store.ts'
import { createJobsMetrics, type JobsMetrics } from './jobs-metrics.ts'

/** What Plinth stores as a pg-boss job's data: the payload, and where the job came from. */
export interface JobEnvelope {
  readonly payload: unknown
  readonly meta: { readonly requestId?: string; readonly scheduleId?: string; readonly key?: string }
}

export interface EnqueueOptions {
  /** Run no sooner than this many milliseconds from now. */
  readonly delay?: number | undefined
  /** Run no sooner than this time (wins over `delay`). */
  readonly runAt?: Date | undefined
  /** Higher runs first; defaults to the job type's priority. */
  readonly priority?: number | undefined
  /**
   * The same key for the same job type within `PLINTH_JOBS_IDEMPOTENCY_WINDOW` creates no second
   * job: the result names the existing one with `created: false`.
   */
  readonly idempotencyKey?: string | undefined
  /** Stored with the job and put on every log line of every attempt. */
  readonly requestId?: string | undefined
  /** When the queue is full: `reject` (default) throws `PLINTH_JOB_QUEUE_FULL`; `accept` enqueues anyway. */
  readonly overflow?: 'reject' | 'accept' | undefined
  /** A Kysely transaction: the job exists only if that transaction commits. */
  readonly db?: Kysely<PlinthTables> | undefined
  /**
   * An administrator's enqueue (HTTP, CLI): `job:enqueued` is recorded in the job's transaction.
   * Jobs that modules enqueue for their own work pass nothing and are not audited.
   */
  readonly audit?: AuditCaller | undefined
}

export interface EnqueueResult {
  readonly id: string
  /** False when an idempotency key matched an existing job. */
  readonly created: boolean
}

export interface JobTypeView {
  readonly name: string
  readonly description: string | null
  readonly policy: ResolvedPolicy
  readonly deadLetterQueue: string | null
  readonly waiting: number
  readonly deadLettered: number
}

interface Registered {
  readonly definition: JobDefinition
  readonly policy: ResolvedPolicy
  readonly validate: ReturnType<ReturnType<typeof createStrictAjv>['compile']>
  /** Cached waiting count for backpressure. */
  depth: { count: number; at: number; refreshing?: Promise<number> | undefined }
}

const NIL_UUID = '00000000-0000-0000-0000-000000000000'

/** What the job engine runs in this process. */
export type JobsMode = 'worker' | 'client'

/** An IDatabase for pg-boss over a Kysely connection or transaction. */
export function bossDb(kysely: Kysely<PlinthTables>): Db {
  return {
    async executeSql(text: string, values?: unknown[]) {
      const result = await kysely.executeQuery(CompiledQuery.raw(text, values ?? []))
      return { rows: result.rows as unknown[] }
    },
  }
}

/** Turns pg-boss/driver failures into Plinth errors; PlinthErrors pass through. */
function engineError(err: unknown): Error {
  return classifyEnqueueError(err)
}

/**
 * Plinth's job layer over pg-boss: a registry of typed job types, enqueue with validation,
 * idempotency keys and backpressure, workers with correlation and metrics, and reads for the API.
 * Created by the composition root; `start()` runs once migrations are current.
 */
export function createJobEngine(deps: {
  config: PlinthConfig
  logger: Logger
  db: Database
  metrics: Metrics
  /** Records administrators' actions (enqueue, retry, cancel, purge, redrive) when they pass a caller. */
  audit?: Pick<Audit, 'record'> | undefined
}) {
  const { config, db } = deps
  const log = deps.logger.child({ component: 'jobs' })
  const store: JobStore = createJobStore(db.kysely)
  const ajv = createStrictAjv()
  const registry = new Map<string, Registered>()
  const workerIds = new Map<string, string[]>()
  let nextWake = 0
  let boss: PgBoss | undefined
  let started: Promise<void> | undefined
  let running = false
  let stopping: Promise<void> | undefined
  let mode: JobsMode = 'client'
  const m: JobsMetrics = createJobsMetrics(deps.metrics, cachedDepths())

  function cachedDepths() {
    let cache: { at: number; value: Promise<Awaited<ReturnType<JobStore['depths']>>> } | undefined
    return () => {
      if (!running) return Promise.resolve([])
      if (!cache || Date.now() - cache.at > 5000) {
        cache = { at: Date.now(), value: store.depths() }
        cache.value.catch(() => {
          cache = undefined
        })
      }
      return cache.value
    }
  }

  // pg-boss reports every failed poll; during a database outage that is one line per worker per
  // second. Log the first, then a summary at most every 30 s.
  let lastErrorLog = 0
  let suppressed = 0
  function onBossError(err: Error) {
    const now = Date.now()
    if (now - lastErrorLog < 30_000) {
      suppressed++
      return
    }
    log.warn({ err, suppressed }, 'job engine error (workers keep polling and resume by themselves)')
    lastErrorLog = now
    suppressed = 0
  }

  function bossOptions(forMode: JobsMode): ConstructorOptions {
    const workers = forMode === 'worker'
    const common: ConstructorOptions = {
      schema: JOBS_SCHEMA,
      migrate: true,
      supervise: workers,
      schedule: workers,
      monitorIntervalSeconds: Math.round(config.jobsMonitorInterval / 1000),
      superviseIntervalSeconds: Math.round(config.jobsMonitorInterval / 1000),
      cronWorkerIntervalSeconds: Math.min(5, Math.max(1, Math.round(config.jobsMonitorInterval / 1000))),
      cronMonitorIntervalSeconds: Math.min(30, Math.max(1, Math.round(config.jobsMonitorInterval / 1000))),
      warningQueueSize: config.jobsMaxQueued,
    }
    if (db.kind === 'postgres' && config.databaseUrl)
      return {
        ...common,
        connectionString: config.databaseUrl,
        max: config.jobsDbPool,
        application_name: 'plinth-jobs',
        useListenNotify: workers,
        connectionTimeoutMillis: config.dbConnectTimeout,
      }
    // The embedded database has one connection: pg-boss shares Plinth's pool.
    return { ...common, backend: 'pglite', db: bossDb(db.kysely) }
  }

  function queueOptions(name: string, r: Registered) {
    const p = r.policy
    return {
      retryLimit: p.retryLimit,
      retryDelay: p.retryDelay,
      retryBackoff: p.backoff,
      ...(p.backoff ? { retryDelayMax: p.retryDelayMax } : {}),
      expireInSeconds: p.timeout,
      deleteAfterSeconds: p.retention,
      heartbeatSeconds: Math.max(10, Math.round(config.jobsLease / 1000)),
      ...(p.deadLetter ? { deadLetter: deadLetterQueue(name) } : {}),
    }
  }

  async function ensureQueues(b: PgBoss) {
    for (const [name, r] of registry) {
      if (r.policy.deadLetter)
        await b.createQueue(deadLetterQueue(name), {
          // kept until purged or redriven (pg-boss' longest retention), never worked
          retentionSeconds: 365 * 86_400,
          deleteAfterSeconds: r.policy.retention,
        })
      const options = queueOptions(name, r)
      await b.createQueue(name, { ...options, notify: db.kind === 'postgres' })
      await b.updateQueue(name, options)
      // Fill pg-boss' queue cache now: a first send inside a caller's transaction would otherwise
      // look the queue up on another connection, which the embedded database (one connection) lacks.
      await b.findJobs(name, { id: NIL_UUID })
      if (r.policy.deadLetter) await b.findJobs(deadLetterQueue(name), { id: NIL_UUID })
    }
  }

  function wakeLocal(name: string) {
    const ids = workerIds.get(name)
    if (!boss || !ids?.length) return
    boss.notifyWorker(ids[nextWake++ % ids.length] as string)
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
      throw err
    } finally {
      // More work is likely waiting: fetch again now instead of after the poll interval.
      const id = workerId()
      if (id && running) boss?.notifyWorker(id)
    }
  }

  async function startWorkers(b: PgBoss) {
    const pollingIntervalSeconds = config.jobsPollInterval / 1000
    for (const [name, r] of registry) {
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

  function requireBoss(): PgBoss {
    if (!boss || !running) throw new PlinthError('PLINTH_JOBS_UNAVAILABLE')
    return boss
  }

  function registered(name: string): Registered {
    const r = registry.get(name)
    if (!r) throw new PlinthError('PLINTH_JOB_TYPE_UNKNOWN', `No job type "${name}" is registered.`)
    return r
  }

  async function requireJob(id: string): Promise<JobView> {
    const job = await store.get(id)
    if (!job) throw new PlinthError('PLINTH_JOB_NOT_FOUND')
    return job
  }

  /** Records an administrator's action in `trx`; nothing for internal callers (no caller). */
  async function audited(
    trx: Kysely<PlinthTables>,
    by: AuditCaller | undefined,
    action: string,
    target: AuditEntry['target'],
    details: Record<string, unknown>,
  ): Promise<void> {
    if (!by) return
    if (!deps.audit) throw new Error('the job engine was created without an audit log')
    await deps.audit.record(trx, callerEntry(by, action, target, { details }))
  }

  /**
   * Makes sure pg-boss knows the queue before a statement runs in one of our transactions: it would
   * otherwise look it up on another connection, which the embedded database (one connection) lacks.
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

  /** Enqueues without auditing (see `engine.enqueue`). */
  async function enqueueJob(name: string, payload: unknown, options: EnqueueOptions): Promise<EnqueueResult> {
    const r = registered(name)
    engine.validatePayload(name, payload)
    const b = requireBoss()
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
    const meta = {
      ...(options.requestId ? { requestId: options.requestId } : {}),
      ...(options.idempotencyKey ? { key: options.idempotencyKey } : {}),
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
      m.enqueued.inc({ name })
      // Jobs enqueued in a caller's transaction are visible only after it commits; the poll finds them.
      if (!options.db) wakeLocal(name)
    }
    return result
  }

  const engine = {
    get mode() {
      return mode
    },
    get running() {
      return running
    },
    /** The pg-boss instance, once started (schedules and tests use it). */
    get boss(): PgBoss {
      return requireBoss()
    },
    metrics: m,
    store,

    /** Adds a job type; before `start()` only. */
    register(definition: JobDefinition): void {
      if (started) throw new Error(`Job type "${definition.name}" registered after the job engine started`)
      if (registry.has(definition.name)) throw new Error(`Job type "${definition.name}" is registered twice`)
      registry.set(definition.name, {
        definition,
        policy: resolvePolicy(definition.policy, {
          concurrency: config.jobsConcurrency,
          maxQueued: config.jobsMaxQueued,
        }),
        validate: ajv.compile(definition.payload as object),
        depth: { count: 0, at: 0 },
      })
    },

    /**
     * Wakes a local worker of the job type now instead of at its next poll: for jobs enqueued in a
     * caller's transaction, once that transaction committed.
     */
    wake(name: string): void {
      wakeLocal(name)
    },

    has(name: string): boolean {
      return registry.has(name)
    },

    definitions(): readonly { definition: JobDefinition; policy: ResolvedPolicy }[] {
      return [...registry.values()]
    },

    /**
     * Installs or upgrades the engine's schema, creates the queues, and in `worker` mode starts a
     * worker per unit of concurrency of every job type (plus cron and maintenance).
     */
    start(startMode: JobsMode): Promise<void> {
      started ??= (async () => {
        mode = startMode
        const b = new PgBoss(bossOptions(mode))
        b.on('error', onBossError)
        b.on('warning', (w) => log.warn({ warning: w.message, data: w.data }, 'job engine warning'))
        await b.start()
        boss = b
        try {
          await ensureQueues(b)
          running = true
          if (mode === 'worker') await startWorkers(b)
        } catch (err) {
          running = false
          await b.stop({ graceful: false }).catch(() => {})
          throw err
        }
        log.info({ mode, types: [...registry.keys()] }, 'job engine started')
      })()
      return started
    },

    /**
     * Stops fetching at once, lets running attempts finish for up to `timeoutMs`, then fails the
     * unfinished ones (they are retried, by this or another worker) and aborts their signals.
     */
    stop(timeoutMs: number): Promise<void> {
      stopping ??= (async () => {
        if (!started) return
        await started.catch(() => {})
        const b = boss
        running = false
        if (!b) return
        await b.stop({ graceful: true, timeout: timeoutMs, close: true })
        log.info('job engine stopped')
      })()
      return stopping
    },

    /** Throws `PLINTH_JOB_PAYLOAD_INVALID` (naming the fields) unless the payload matches the type's schema. */
    validatePayload(name: string, payload: unknown): void {
      const r = registered(name)
      if (!r.validate(payload))
        throw new PlinthError('PLINTH_JOB_PAYLOAD_INVALID', undefined, {
          errors: fieldErrors('body', r.validate.errors ?? []).map((e) => ({
            ...e,
            field: e.field ? `payload.${e.field}` : 'payload',
          })),
        })
    },

    async enqueue(name: string, payload: unknown, options: EnqueueOptions = {}): Promise<EnqueueResult> {
      const by = options.audit
      if (!by) return enqueueJob(name, payload, options)
      // The job and its audit row commit together, in the caller's transaction or one of our own.
      const run = async (trx: Kysely<PlinthTables>) => {
        const result = await enqueueJob(name, payload, { ...options, db: trx })
        if (result.created)
          await audited(
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
      if (result.created) wakeLocal(name)
      return result
    },

    get: requireJob,

    list(filter: JobFilter) {
      return store.list(filter)
    },

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
      const b = requireBoss()
      await knowQueue(b, job.name)
      await db.kysely.transaction().execute(async (trx) => {
        // The state is read again under a row lock: the command and its audit row see the same job.
        const state = await store.lockState(trx, job.name, id)
        if (state !== 'failed' && state !== 'cancelled') throw moved(job, state, 'retried')
        const on = { db: bossDb(trx) }
        if (state === 'cancelled') await b.resume(job.name, id, on)
        else await b.retry(job.name, id, on)
        await audited(trx, by, 'job:retried', { type: 'job', id }, { name: job.name, from: state })
      })
      if (registry.has(job.name)) wakeLocal(job.name)
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
      const b = requireBoss()
      await knowQueue(b, job.name)
      await db.kysely.transaction().execute(async (trx) => {
        // The state is read again under a row lock (workers skip locked rows): a job a worker took
        // meanwhile is left alone.
        const state = await store.lockState(trx, job.name, id)
        if (state !== 'created' && state !== 'retry') throw moved(job, state, 'cancelled')
        await b.cancel(job.name, id, { db: bossDb(trx) })
        await audited(trx, by, 'job:cancelled', { type: 'job', id }, { name: job.name, from: state })
      })
      return requireJob(id)
    },

    /**
     * Deletes every job in a job type's dead-letter queue; returns how many. With a caller,
     * `job:dead-letters-purged` is recorded in the same transaction as the deletion.
     */
    async purgeDeadLetter(name: string, by?: AuditCaller): Promise<number> {
      const r = registered(name)
      if (!r.policy.deadLetter) return 0
      const b = requireBoss()
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
        await audited(trx, by, 'job:dead-letters-purged', { type: 'job-type', id: name }, { queue, purged })
        return purged
      })
    },

    /**
     * Moves the jobs of a dead-letter queue back to their job type, as new jobs; returns how many.
     * With a caller, `job:dead-letters-redriven` is recorded in the same transaction as the move.
     */
    async redriveDeadLetter(name: string, by?: AuditCaller): Promise<number> {
      const r = registered(name)
      if (!r.policy.deadLetter) return 0
      const b = requireBoss()
      const queue = deadLetterQueue(name)
      await knowQueue(b, queue)
      const count = await db.kysely.transaction().execute(async (trx) => {
        const n = await b.redrive(queue, { destination: name, limit: 10_000, db: bossDb(trx) })
        await audited(
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
    async types(): Promise<JobTypeView[]> {
      const views: JobTypeView[] = []
      for (const [name, r] of registry) {
        views.push({
          name,
          description: r.definition.description ?? null,
          policy: r.policy,
          deadLetterQueue: r.policy.deadLetter ? deadLetterQueue(name) : null,
          waiting: await store.waiting(name, Number.MAX_SAFE_INTEGER - 1),
          deadLettered: r.policy.deadLetter
            ? await store.waiting(deadLetterQueue(name), Number.MAX_SAFE_INTEGER - 1)
            : 0,
        })
      }
      return views
    },
  }
  return engine
}

export type JobEngine = ReturnType<typeof createJobEngine>
