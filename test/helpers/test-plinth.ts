import type { SpanExporter } from '@opentelemetry/sdk-trace'
import type { Logger } from 'pino'
import { createPlinth, type Plinth } from '../../src/app/create-plinth.ts'
import { builtinModules } from '../../src/app/modules.ts'
import type { PlinthConfig } from '../../src/config/config.schema.ts'
import type { PlinthModule } from '../../src/core/module.ts'
import type { PgBossJobEngine } from '../../src/modules/jobs/job-engine.ts'
import { createLogger } from '../../src/observability/logger.ts'
import { recordConfigSecrets, recordInjectedSecrets, runLogStream } from './run-logs.ts'
import { testConfig } from './test-config.ts'
import { createTestDatabase } from './test-database.ts'

export type Backend = 'embedded' | 'postgres'

export interface TestPlinth extends Omit<Plinth, 'jobs'> {
  /** The built-in jobs module's engine, which every test Plinth loads: pg-boss itself is reachable. */
  readonly jobs: PgBossJobEngine
  /** Shuts down and drops the test database; safe to call twice. */
  close(): Promise<void>
}

/**
 * A prepared (connected, migrated) Plinth on the chosen backend: an in-memory PGlite, or a fresh
 * database on the test PostgreSQL server. Use `app.inject()` against it, or `listen()`.
 */
export async function startTestPlinth(
  options: {
    backend?: Backend
    env?: Record<string, string | undefined>
    modules?: readonly PlinthModule[]
    logger?: Logger
    config?: PlinthConfig
    prepare?: boolean
    /** `ctx.now` (see clock.ts's `movableClock`); real time by default. */
    now?: () => number
    /** Starts tracing with this exporter (the SDK's in-memory one) instead of OTLP. */
    traceExporter?: SpanExporter
  } = {},
): Promise<TestPlinth> {
  const backend = options.backend ?? 'embedded'
  const testDb = backend === 'postgres' ? await createTestDatabase() : undefined
  // When the run scans its logs (run-logs.ts), every instance logs at debug, request bodies
  // included, into the capture file, and the secrets it sees are recorded.
  const capture = runLogStream()
  const bodies =
    capture && !options.logger && options.env?.PLINTH_ENV !== 'production'
      ? { PLINTH_LOG_BODIES: 'true' }
      : {}
  const config =
    options.config ??
    testConfig({ ...bodies, ...(testDb ? { DATABASE_URL: testDb.url } : {}), ...options.env })
  recordConfigSecrets(config)
  const logger =
    options.logger ?? (capture && createLogger({ ...config, logLevel: 'debug', logFormat: 'json' }, capture))
  const plinth = await createPlinth({
    config,
    ...(logger ? { logger } : {}),
    ...(options.now ? { now: options.now } : {}),
    ...(options.traceExporter ? { traceExporter: options.traceExporter } : {}),
    modules: [...builtinModules, ...(options.modules ?? [])],
  })
  recordInjectedSecrets(plinth.app)
  let closed: Promise<void> | undefined
  const close = () => {
    closed ??= (async () => {
      try {
        await plinth.shutdown()
      } finally {
        await testDb?.drop()
      }
    })()
    return closed
  }
  if (options.prepare !== false) {
    try {
      await plinth.prepare()
    } catch (err) {
      await close()
      throw err
    }
  }
  return Object.assign(Object.create(plinth) as Plinth, { close }) as TestPlinth
}
