import type { Ajv } from 'ajv'
import { type ConstructorOptions, PgBoss } from 'pg-boss'
import type { Logger } from 'pino'
import type { PlinthConfig } from '../../config/config.schema.ts'
import type { Audit } from '../../core/audit.ts'
import {
  deadLetterQueue,
  type JobDefinition,
  type JobsMode,
  type ResolvedPolicy,
  resolvePolicy,
} from '../../core/jobs.ts'
import type { Database } from '../../infra/db/create-db.ts'
import type { ErrorReports } from '../../observability/error-reports.ts'
import type { Metrics } from '../../observability/metrics.ts'
import { createStrictAjv, isTypeBoxBuilt } from '../../shared/validation.ts'
import { bossDb, type EngineState, NIL_UUID, type Registered, requireBoss } from './engine-state.ts'
import { createJobCommands } from './job-commands.ts'
import { createEnqueue } from './job-enqueue.ts'
import { createJobReads } from './job-reads.ts'
import { createJobStore, JOBS_SCHEMA, type JobStore, PG_BOSS_SCHEMA_VERSION } from './job-store.ts'
import { createJobWorkers } from './job-workers.ts'
import { createJobsMetrics } from './jobs-metrics.ts'

export type { EnqueueOptions, EnqueueResult, JobEngine, JobsMode, JobTypeView } from '../../core/jobs.ts'
export { bossDb, type JobEnvelope } from './engine-state.ts'

/**
 * Plinth's job layer over pg-boss: a registry of typed job types, enqueue with validation,
 * idempotency keys and backpressure (job-enqueue.ts), workers with correlation and metrics
 * (job-workers.ts), reads for the API (job-reads.ts) and administrators' commands
 * (job-commands.ts). This file is the lifecycle: registering types, starting pg-boss and its
 * queues, stopping. Created by the composition root; `start()` runs once migrations are current.
 */
export function createJobEngine(deps: {
  config: PlinthConfig
  logger: Logger
  db: Database
  metrics: Metrics
  /** Records administrators' actions (enqueue, retry, cancel, purge, redrive) when they pass a caller. */
  audit?: Pick<Audit, 'record'> | undefined
  /** Where jobs that failed their last attempt are reported (the errors module groups them). */
  errorReports?: ErrorReports | undefined
}) {
  const { config, db } = deps
  const log = deps.logger.child({ component: 'jobs' })
  const store: JobStore = createJobStore(db.kysely)
  // Made at its first use: an Ajv with its formats, and the meta-schema it compiles for its first
  // schema check, cost 70-120 ms of a restart's main thread on a 2-core machine (decision 0048).
  let strictAjv: Ajv | undefined
  const ajv = () => (strictAjv ??= createStrictAjv())
  let started: Promise<void> | undefined
  let workersStarted: Promise<void> | undefined
  let stopping: Promise<void> | undefined
  let mode: JobsMode = 'client'
  const s: EngineState = {
    config,
    db,
    log,
    store,
    m: createJobsMetrics(deps.metrics, cachedDepths()),
    registry: new Map<string, Registered>(),
    audit: deps.audit,
    errorReports: deps.errorReports,
    boss: undefined,
    running: false,
  }
  const { registry } = s
  const workers = createJobWorkers(s)
  const enqueue = createEnqueue(s, workers.wake)
  const reads = createJobReads(s)
  const commands = createJobCommands(s, { get: reads.get, wake: workers.wake })

  /** The workers of every job type (worker mode), once; none once stopping. */
  function startWorkers(): Promise<void> {
    workersStarted ??= (async () => {
      const b = s.boss
      if (mode !== 'worker' || !b || stopping) return
      await workers.start(b)
    })()
    return workersStarted
  }

  function cachedDepths() {
    let cache: { at: number; value: Promise<Awaited<ReturnType<JobStore['depths']>>> } | undefined
    return () => {
      if (!s.running) return Promise.resolve([])
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
    // The embedded database has one session: pg-boss shares Plinth's pool.
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

  /**
   * Creates the queues that do not exist and brings those whose options drifted in line: one read
   * of every queue, then a statement only for what differs (a restart with unchanged job types
   * writes nothing). pg-boss' start filled its queue cache with every queue; a queue created or
   * updated here is looked up once more to put it back in the cache: a first send inside a
   * caller's transaction would otherwise look the queue up on another connection, which on the
   * embedded database (one session, held by the transaction) waits for it.
   */
  async function ensureQueues(b: PgBoss): Promise<{ created: number; updated: number }> {
    const existing = new Map(
      (await b.getQueues()).map((q) => [q.name, q as unknown as Record<string, unknown>]),
    )
    const touched: string[] = []
    let created = 0
    let updated = 0
    for (const [name, r] of registry) {
      if (r.policy.deadLetter && !existing.has(deadLetterQueue(name))) {
        await b.createQueue(deadLetterQueue(name), {
          // kept until purged or redriven (pg-boss' longest retention), never worked
          retentionSeconds: 365 * 86_400,
          deleteAfterSeconds: r.policy.retention,
        })
        touched.push(deadLetterQueue(name))
        created++
      }
      const options = queueOptions(name, r)
      const queue = existing.get(name)
      if (!queue) {
        await b.createQueue(name, { ...options, notify: db.kind === 'postgres' })
        touched.push(name)
        created++
      } else if (differs(queue, options)) {
        await b.updateQueue(name, options)
        touched.push(name)
        updated++
      }
    }
    for (const name of touched) await b.findJobs(name, { id: NIL_UUID })
    return { created, updated }
  }

  const engine = {
    get mode() {
      return mode
    },
    get running() {
      return s.running
    },
    /** The pg-boss instance, once started (schedules and tests use it). */
    get boss(): PgBoss {
      return requireBoss(s)
    },
    metrics: s.m,
    store,
    /** Adds a job type; before `start()` only. */
    register(definition: JobDefinition): void {
      if (started) throw new Error(`Job type "${definition.name}" registered after the job engine started`)
      if (registry.has(definition.name)) throw new Error(`Job type "${definition.name}" is registered twice`)
      // A schema TypeBox built has JSON Schema's structure; Ajv checks the values of its keywords
      // when it compiles the validator, at the first enqueue (as routes compile theirs, decision
      // 0033). Any other schema is checked against the meta-schema now. Compiling every job type's
      // validator at boot cost ~200 ms of a start (decision 0034), the meta-schema alone 70-120 ms.
      const payload = definition.payload as object
      const invalidSchema = (detail: string) =>
        new Error(`Job type "${definition.name}" has an invalid payload schema: ${detail}`)
      if (!isTypeBoxBuilt(payload) && !ajv().validateSchema(payload))
        throw invalidSchema(ajv().errorsText(ajv().errors))
      let validate: Registered['validate'] | undefined
      let invalid: Error | undefined
      registry.set(definition.name, {
        definition,
        policy: resolvePolicy(definition.policy, {
          concurrency: config.jobsConcurrency,
          maxQueued: config.jobsMaxQueued,
        }),
        get validate() {
          // Remembered: Ajv caches a schema before checking it, so a second compile would not throw.
          if (invalid) throw invalid
          if (validate === undefined) {
            try {
              validate = ajv().compile(payload)
            } catch (err) {
              invalid = invalidSchema((err as Error).message)
              throw invalid
            }
          }
          return validate
        },
        depth: { count: 0, at: 0 },
      })
    },

    /**
     * Wakes a local worker of the job type now instead of at its next poll: for jobs enqueued in a
     * caller's transaction, once that transaction committed.
     */
    wake(name: string): void {
      workers.wake(name)
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
    start(startMode: JobsMode, options?: { deferWorkers?: boolean }): Promise<void> {
      started ??= (async () => {
        mode = startMode
        const b = new PgBoss(bossOptions(mode))
        b.on('error', onBossError)
        b.on('warning', (w) => log.warn({ warning: w.message, data: w.data }, 'job engine warning'))
        await b.start()
        s.boss = b
        try {
          // job-store.ts reads pg-boss' tables: they must be the schema it was written for.
          await store.assertSchemaVersion()
          const queues = await ensureQueues(b)
          log.debug(queues, 'job queues ensured')
          s.running = true
          if (mode === 'worker' && !options?.deferWorkers) await startWorkers()
        } catch (err) {
          s.running = false
          await b.stop({ graceful: false }).catch(() => {})
          throw err
        }
        // A client (an `api` process, a CLI command) runs nothing: that is no news at info.
        log[mode === 'worker' ? 'info' : 'debug']({ mode, types: [...registry.keys()] }, 'job engine started')
      })()
      return started
    },

    async startWorkers(): Promise<void> {
      if (!started) throw new Error('startWorkers() runs after start()')
      await started
      await startWorkers()
    },

    /**
     * Stops fetching at once, lets running attempts finish for up to `timeoutMs`, then fails the
     * unfinished ones (they are retried, by this or another worker) and aborts their signals.
     */
    stop(timeoutMs: number): Promise<void> {
      stopping ??= (async () => {
        if (!started) return
        await started.catch(() => {})
        // Workers being started (listen() starts them once the port is open) finish starting
        // first, so that every fetch loop they register is stopped with the rest.
        await workersStarted?.catch(() => {})
        const b = s.boss
        s.running = false
        workers.stop()
        if (!b) return
        await b.stop({ graceful: true, timeout: timeoutMs, close: true })
        log.info('job engine stopped')
      })()
      return stopping
    },

    /**
     * The migrated template of a new embedded cluster holds pg-boss' schema and the queues too
     * (decision 0039): a cluster started from it skips installing the schema and creating ~17
     * queues. Keyed by pg-boss' schema version (the SQL it installs); the queues are whatever the
     * start that made the template registered, and `ensureQueues` creates or updates the
     * difference at a later start, as on any restart.
     */
    template: {
      key: `pg-boss-schema-${PG_BOSS_SCHEMA_VERSION}`,
      async install(): Promise<void> {
        if (started) return
        // What start('client') does, then stops: the schema, its version check, the queues.
        const b = new PgBoss(bossOptions('client'))
        b.on('error', onBossError)
        await b.start()
        try {
          await store.assertSchemaVersion()
          const queues = await ensureQueues(b)
          log.debug(queues, 'job engine schema and queues installed for the template')
        } finally {
          await b.stop({ graceful: false, close: true })
        }
      },
    },

    ...enqueue,
    ...reads,
    ...commands,
  }
  return engine
}

/** Whether a stored queue's options differ from the wanted ones (only the options given are compared). */
export function differs(
  queue: Readonly<Record<string, unknown>>,
  wanted: Readonly<Record<string, unknown>>,
): boolean {
  return Object.entries(wanted).some(([key, value]) => (queue[key] ?? undefined) !== value)
}

/** The engine over pg-boss: the `JobEngine` contract, plus pg-boss itself, its reads and metrics (schedules, tests). */
export type PgBossJobEngine = ReturnType<typeof createJobEngine>
