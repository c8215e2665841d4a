import { createHash } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import type { SpanExporter } from '@opentelemetry/sdk-trace'
import type { Logger } from 'pino'
import type { PlinthConfig } from '../config/config.schema.ts'
import type { InstanceLauncher } from '../core/instances.ts'
import type { JobEngine } from '../core/jobs.ts'
import type { ModuleContext, PlinthMigration, PlinthModule, RegisteredBackupPath } from '../core/module.ts'
import { createPersonalDataRegistry } from '../core/privacy.ts'
import type { Retention } from '../core/retention.ts'
import { createSecurityEvents, type SecurityEvents } from '../core/security-events.ts'
import { PLINTH_VERSION } from '../core/version.ts'
import { createServer, type PlinthApp } from '../http/create-server.ts'
import { createMemoryCache, createRedisCache } from '../infra/cache/cache.ts'
import type { RedisHandle } from '../infra/cache/redis.ts'
import { createDatabase, type Database } from '../infra/db/create-db.ts'
import type { PrestartedDatabase } from '../infra/db/embedded-prestart.ts'
import { createMigrator, migrationSetKey, type PlinthMigrator } from '../infra/db/migrator.ts'
import { createErrorReports } from '../observability/error-reports.ts'
import {
  cachedCheck,
  createHealth,
  eventLoopCheck,
  type Health,
  memoryCheck,
} from '../observability/health.ts'
import { createLogger } from '../observability/logger.ts'
import { createMetrics, type Metrics } from '../observability/metrics.ts'
import { startTracing, type Tracing } from '../observability/tracing.ts'
import { createInstanceLauncher, launchCommand } from './instance-launcher.ts'
import { assertModules } from './module-checks.ts'
import { builtinModules } from './modules.ts'
import { providedUsers, provideServices } from './provided-contracts.ts'
import { createRetention } from './retention-runner.ts'

/** While HTTP drains at shutdown, connections left idle are closed this often. */
const IDLE_SWEEP_MS = 100

export interface CreatePlinthOptions {
  readonly config: PlinthConfig
  /** Defaults to a logger built from the config. */
  readonly logger?: Logger
  /**
   * Every module to load, the built-in ones included. Defaults to the built-in modules followed by
   * those an application registered with `useApplicationModules` (what `runPlinth({ modules })` does).
   */
  readonly modules?: readonly PlinthModule[]
  /**
   * For the CLI: when a running server holds the embedded data directory, reach its database
   * through the server's socket instead of failing with PLINTH_DB_LOCKED.
   */
  readonly attachToRunning?: boolean
  /** `ctx.now`: defaults to `Date.now`; tests pass a clock they move to let time pass. */
  readonly now?: () => number
  /**
   * Tracing already started (`plinth start` starts it before loading the server); otherwise it is
   * started here when the configuration asks for it. Shut down with the Plinth either way.
   */
  readonly tracing?: Tracing
  /** Spans go to this exporter instead of OTLP (tests: the SDK's in-memory exporter). */
  readonly traceExporter?: SpanExporter
  /** `ctx.instances`: defaults to starting `plinth start` (or the application's entry) in a child process. */
  readonly instanceLauncher?: InstanceLauncher
  /**
   * The embedded database `plinth start` started before loading the application, so that the
   * cluster opens while the modules load (embedded-prestart.ts): adopted when it holds the
   * configured data directory, closed otherwise (and when the build fails).
   */
  readonly prestartedDatabase?: PrestartedDatabase
  /**
   * Begin `prepare()`'s database steps (connect, migrations, services, modules, the job engine,
   * schedules) while the HTTP server is still being built, instead of after (`plinth start`: the
   * steps mostly wait on the database, the build is this thread's work). Their failure is what
   * `prepare()` and `listen()` reject with.
   */
  readonly prepareEarly?: boolean
}

export interface Plinth {
  readonly config: PlinthConfig
  readonly logger: Logger
  readonly db: Database
  readonly redis: RedisHandle | undefined
  readonly migrator: PlinthMigrator
  readonly metrics: Metrics
  readonly health: Health
  readonly securityEvents: SecurityEvents
  /** `context.jobs`, as the module that provides it (the built-in jobs module: pg-boss) built it. */
  readonly jobs: JobEngine
  /** Every module's retention rules; the `plinth.retention` job and `plinth retention run` call `run()`. */
  readonly retention: Retention
  readonly context: ModuleContext
  readonly app: PlinthApp
  /** The tracing SDK when tracing is on (OTEL_EXPORTER_OTLP_ENDPOINT), undefined otherwise. */
  readonly tracing: Tracing | undefined
  /** Connects to the database (retrying up to the deadline), migrates when configured, and readies the routes. */
  prepare(): Promise<void>
  /** `prepare()` then listen on HOST:PORT; returns the address. */
  listen(): Promise<string>
  /**
   * Graceful stop: `/ready` answers 503 at once; after `PLINTH_SHUTDOWN_DELAY` the server stops
   * accepting connections and in-flight requests finish (cut after `PLINTH_SHUTDOWN_TIMEOUT`);
   * then Redis and the database close. Calling it again returns the same promise.
   */
  shutdown(): Promise<void>
  readonly shuttingDown: boolean
}

let applicationModules: readonly PlinthModule[] = []
/** The script that registered the application's modules (what `ctx.instances` starts). */
let applicationEntry: string | undefined

/**
 * The application's modules, loaded after the built-in ones by every `createPlinth` called
 * without `modules` in this process: the server and every CLI command (`migrate`, `privacy`,
 * `retention`, `jobs`…) then see the application's tables, routes, jobs and personal data.
 */
export function useApplicationModules(modules: readonly PlinthModule[]): void {
  applicationModules = [...modules]
  applicationEntry = modules.length > 0 ? process.argv[1] : undefined
}

/** The modules `createPlinth` loads when given none: the built-in ones, then the application's. */
export function defaultModules(): readonly PlinthModule[] {
  return [...builtinModules, ...applicationModules]
}

/**
 * The key of a new embedded cluster's migrated template (template.ts): the migration set, and what
 * the job engine installs in it (pg-boss' schema version), so that a change of either makes another.
 */
function migratedTemplateKey(migrationsKey: string, jobs: JobEngine): string {
  const extra = jobs.template?.key
  if (!extra) return migrationsKey
  return createHash('sha256').update(`${migrationsKey}\0${extra}`).digest('hex').slice(0, 16)
}

function collectMigrations(modules: readonly PlinthModule[]): Record<string, PlinthMigration> {
  const all: Record<string, PlinthMigration> = {}
  for (const m of modules) Object.assign(all, m.migrations ?? {})
  return all
}

/**
 * The composition root: builds every adapter from the config and wires them together. It is the
 * one place that depends on all layers; nothing else imports it but the CLI, tests and benchmarks.
 *
 * @example
 * const plinth = await createPlinth({ config: loadConfig() })
 * await plinth.listen()
 */
export async function createPlinth(options: CreatePlinthOptions): Promise<Plinth> {
  const { config } = options
  const logger = options.logger ?? createLogger(config)
  const modules = options.modules ?? defaultModules()
  // Before anything is opened: a module that cannot load stops the boot with a clear message.
  try {
    assertModules(modules)
  } catch (err) {
    await options.prestartedDatabase?.close()
    throw err
  }
  const startedAt = Date.now()
  const metrics = createMetrics({ version: PLINTH_VERSION, revision: config.revision, env: config.env })
  const tracing =
    options.tracing ??
    (await startTracing(config, {
      logger,
      version: PLINTH_VERSION,
      ...(options.traceExporter ? { exporter: options.traceExporter } : {}),
    }))
  let db: Database | undefined
  try {
    db = await createDatabase(config, {
      logger,
      attachToRunning: options.attachToRunning ?? false,
      prestarted: options.prestartedDatabase,
      // A start that migrates may begin a new embedded cluster already migrated (template.ts): the
      // template's key is given once the job engine, whose schema it holds too, exists (assemble).
      awaitMigrationSetKey: true,
    })
    return await assemble(options, { logger, modules, startedAt, metrics, db, tracing })
  } catch (err) {
    // A failed build (a route that declares no permission, an unreadable key file…) must not leave
    // the embedded database open and its data directory locked.
    await db?.close().catch(() => {})
    await options.prestartedDatabase?.close().catch(() => {})
    await tracing?.shutdown()
    throw err
  }
}

async function assemble(
  options: CreatePlinthOptions,
  parts: {
    logger: Logger
    modules: readonly PlinthModule[]
    startedAt: number
    metrics: Metrics
    db: Database
    tracing: Tracing | undefined
  },
): Promise<Plinth> {
  const { config } = options
  const { logger, modules, startedAt, metrics, db, tracing } = parts
  // ioredis (~45 modules) is loaded only when Redis is configured (decision 0039).
  const redis = config.redisUrl
    ? (await import('../infra/cache/redis.ts')).createRedis(
        { ...config, redisUrl: config.redisUrl },
        { logger },
      )
    : undefined
  const migrations = createMigrator(db, collectMigrations(modules), { logger })
  // One cheap query, and "none pending" is remembered for a few seconds: migrations only change by
  // a deploy, `plinth migrate`, or this process's migrator (which forgets the cached answer).
  const migrationsCheck = cachedCheck(
    {
      name: 'migrations',
      critical: true,
      async check() {
        const pending = await migrations.pendingCount()
        return { status: pending === 0 ? 'up' : 'down', details: { pending } }
      },
    },
    { ttlMs: 5000, keep: (r) => r.status === 'up' },
  )
  const migrator: PlinthMigrator = Object.freeze({
    ...migrations,
    async up(options?: { to?: number }) {
      try {
        return await migrations.up(options)
      } finally {
        migrationsCheck.invalidate()
      }
    },
    async down(options?: { to?: number }) {
      try {
        return await migrations.down(options)
      } finally {
        migrationsCheck.invalidate()
      }
    },
  })

  const eventLoop = eventLoopCheck()
  const health = createHealth({
    timeoutMs: config.healthTimeout,
    checks: [
      {
        name: 'database',
        critical: true,
        async check() {
          await db.ping(config.healthTimeout)
          return { status: 'up' }
        },
      },
      migrationsCheck,
      ...(redis ? [redis.healthCheck()] : []),
      eventLoop,
      memoryCheck(),
    ],
  })

  const pool = () => db.poolStats()
  metrics.gauge('plinth_db_pool_size', 'Open database connections.', () => pool().total)
  metrics.gauge('plinth_db_pool_idle', 'Idle database connections.', () => pool().idle)
  metrics.gauge('plinth_db_pool_waiting', 'Queries waiting for a free connection.', () => pool().waiting)
  metrics.gauge('plinth_db_pool_max', 'Largest number of connections the pool may open.', () => pool().max)
  if (redis)
    metrics.gauge('plinth_redis_connected', '1 when Redis is connected.', () =>
      redis.client.status === 'ready' ? 1 : 0,
    )

  const securityEvents = createSecurityEvents({ logger })
  const cache = redis ? createRedisCache(redis, { logger }) : createMemoryCache()
  const errorReports = createErrorReports({ logger })
  const adapters = { config, logger, db, metrics, redis, cache, securityEvents, errorReports }
  const personalData = createPersonalDataRegistry(modules)
  // The audit writer, keyring, mailer, job engine, schedules and event bus, from the modules that
  // provide them (each seeing those built before it); the keyring works at once with the legacy
  // key and loads the data keys in prepare(), after migrations.
  const provided = await provideServices(modules, {
    ...adapters,
    encryptedColumns: modules.flatMap((m) => m.encryptedColumns ?? []),
  }).catch((err: unknown) => {
    eventLoop.stop()
    throw err
  })
  const { audit, jobs, schedules } = provided.services
  // The migrated template a new embedded cluster starts from: every module's migrations, then the
  // job engine's schema and queues (decision 0039). An existing cluster did not wait for it.
  const templateKey = config.migrateOnStart
    ? migratedTemplateKey(migrationSetKey(collectMigrations(modules)), jobs)
    : undefined
  db.embedded?.setMigrationSetKey(templateKey)
  let backupPaths: RegisteredBackupPath[] | undefined
  const context: ModuleContext = Object.freeze({
    ...adapters,
    ...provided.services,
    personalData,
    now: options.now ?? Date.now,
    instances:
      options.instanceLauncher ??
      createInstanceLauncher({ config, logger, command: launchCommand(applicationEntry) }),
    users: providedUsers(modules, () => context),
    // from every module's declarations, which need the context first
    get backupPaths() {
      backupPaths ??= modules.flatMap((m) =>
        (m.backupPaths?.(context) ?? []).map((p) => Object.freeze({ ...p, module: m.name })),
      )
      return backupPaths
    },
    // built below from every module's rules, which need the context first
    retention: {
      get rules() {
        return retention.rules
      },
      run: (options?: Parameters<Retention['run']>[0]) => retention.run(options),
    },
  })
  const retention: Retention = createRetention({
    rules: modules.flatMap((m) => m.retention?.(context) ?? []),
    db: db.kysely,
    logger,
    metrics,
    audit,
  })
  let shuttingDown = false
  let app: PlinthApp
  // `api` processes enqueue and read; `worker` and `all` also run the workers, cron and maintenance.
  const jobsMode = config.role === 'api' ? 'client' : 'worker'
  let early: Promise<void> | undefined
  try {
    for (const m of modules) m.metrics?.(context)
    // Job types first: the job engine (prepare's database steps) may start while the server is built.
    for (const m of modules) for (const definition of m.jobs?.(context) ?? []) jobs.register(definition)
    if (options.prepareEarly) {
      early = prepareDatabase()
      // Handled where prepare() awaits it; not an unhandled rejection meanwhile.
      early.catch(() => {})
    }
    app = await createServer({
      config,
      logger,
      metrics,
      health,
      modules,
      context,
      version: PLINTH_VERSION,
      startedAt,
      serveApi: config.role !== 'worker',
      isShuttingDown: () => shuttingDown,
      tracing: tracing !== undefined,
    })
    // While draining (the shutdown delay included), every answer tells its client to close the
    // connection: a keep-alive client reconnects (through the load balancer, to another replica)
    // instead of leaving an idle connection that would hold app.close() until the shutdown timeout.
    app.addHook('onSend', (_request, reply, payload, done) => {
      if (shuttingDown) reply.header('connection', 'close')
      done(null, payload)
    })
    for (const m of modules) for (const check of m.healthChecks?.(context) ?? []) health.add(check)
  } catch (err) {
    // The database steps begun early finish (or fail) first; what they started stops with the rest.
    if (early) {
      await early.catch(() => {})
      await jobs.stop(0).catch(() => {})
    }
    eventLoop.stop()
    await provided.close()
    throw err
  }

  let core: Promise<void> | undefined
  let prepared: Promise<void> | undefined
  let stopping: Promise<void> | undefined

  // Everything but the job workers: the database, migrations, services, modules, the job engine
  // (schema, queues, cron, maintenance), schedules and the routes. The workers' first fetches (one
  // per unit of concurrency of every job type) would otherwise queue the start's own statements
  // behind them (the embedded database has one session); listen() starts them once it listens.
  const prepareCore = () => {
    core ??= (async () => {
      await (early ?? prepareDatabase())
      await app.ready()
    })()
    return core
  }

  async function prepareDatabase(): Promise<void> {
    await db.connect()
    if (config.migrateOnStart) {
      await migrator.up()
      // A cluster this start made from scratch: kept as the template, with the job engine's
      // schema and every queue installed first (nothing else is written yet: no data key, user or job).
      const { template } = jobs
      if (templateKey)
        await db.embedded?.cacheMigrated(templateKey, template ? () => template.install() : undefined)
    }
    await provided.prepare()
    // Modules start once their tables exist (when migrations are left to an operator, they may
    // not yet; migrated here, they do).
    if (config.migrateOnStart || (await migrator.pendingCount()) === 0) {
      for (const m of modules) await m.start?.(context)
      await jobs.start(jobsMode, { deferWorkers: true })
      if (jobsMode === 'worker') await schedules.reconcile()
      // One after the other: a new instance creates them in this order (the order they list in).
      if (jobsMode === 'worker')
        for (const m of modules)
          for (const builtin of m.schedules?.(context) ?? [])
            await schedules.ensureBuiltin(builtin.id, builtin.input)
    }
    // Redis only holds what can be lost: a short wait, then on without it (it keeps reconnecting).
    if (redis && !(await redis.connect(2000))) logger.warn({ target: redis.target }, 'starting without redis')
  }

  const plinth: Plinth = {
    config,
    logger,
    db,
    redis,
    migrator,
    metrics,
    health,
    securityEvents,
    jobs,
    retention,
    context,
    app,
    tracing,
    get shuttingDown() {
      return shuttingDown
    },
    prepare() {
      prepared ??= (async () => {
        await prepareCore()
        // Started only when the job engine is (migrations left to an operator may still be pending).
        if (jobs.running) await jobs.startWorkers()
      })()
      return prepared
    },
    async listen() {
      await prepareCore()
      const address = await app.listen({ port: config.port, host: config.host })
      await plinth.prepare()
      logger.info(
        { address, role: config.role, version: PLINTH_VERSION, database: db.kind },
        'plinth listening',
      )
      // A new embedded cluster made from the migrated template's tar: now that the start is done,
      // keep that template as a ready directory too, for the next new cluster (template.ts).
      void db.embedded?.cacheTemplateDir()
      return address
    },
    shutdown() {
      stopping ??= (async () => {
        shuttingDown = true
        logger.info({ delayMs: config.shutdownDelay, timeoutMs: config.shutdownTimeout }, 'shutdown started')
        // Workers stop fetching at once and finish (or give back) their jobs while HTTP drains.
        const jobsStopped = jobs
          .stop(config.shutdownDelay + config.shutdownTimeout)
          .catch((err: unknown) => logger.error({ err }, 'job engine did not stop cleanly'))
        await sleep(config.shutdownDelay)
        const cut = setTimeout(() => {
          logger.warn(
            { timeoutMs: config.shutdownTimeout },
            'shutdown timeout reached, closing open connections',
          )
          app.server.closeAllConnections()
        }, config.shutdownTimeout)
        // app.close() closes the connections idle when it starts (forceCloseConnections: 'idle');
        // one whose request finishes later is told to close (the onSend hook above), and this
        // closes any left idle anyway (an answer written past Fastify's hooks), so that only
        // requests still in flight hold the drain.
        const sweep = setInterval(() => app.server.closeIdleConnections(), IDLE_SWEEP_MS)
        try {
          await app.close()
        } finally {
          clearInterval(sweep)
          clearTimeout(cut)
          await jobsStopped
          eventLoop.stop()
          await provided.close()
          await redis?.close()
          await db.close()
          // Last: the spans of the shutdown's own work are exported too.
          await tracing?.shutdown()
        }
        logger.info('shutdown complete')
      })()
      return stopping
    },
  }
  return plinth
}
