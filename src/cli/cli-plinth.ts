import type { Logger } from 'pino'
import { createPlinth, type Plinth } from '../app/create-plinth.ts'
import type { PlinthConfig } from '../config/config.schema.ts'
import { loadConfig } from '../config/load-config.ts'
import type { PlinthModule } from '../core/module.ts'
import { CommandFailure, cliLogger } from './cli-io.ts'

/** How long a command waits for its Plinth to close before exiting anyway (its work is done). */
const CLOSE_DEADLINE_MS = 10_000

export interface CliPlinthOptions {
  readonly verbose?: boolean
  /** Apply pending migrations in `prepare()` (default: no; the command refuses pending ones). */
  readonly migrate?: boolean
  /** Connect and start the modules (default); false for commands that only read declarations. */
  readonly prepare?: boolean
  /** The modules of this Plinth (default: the built-in ones). */
  readonly modules?: readonly PlinthModule[]
}

/** The configuration of a CLI process: no workers, no drain delay (nothing routes traffic to it). */
export function cliConfig(overrides: Partial<PlinthConfig> = {}): PlinthConfig {
  return Object.freeze({ ...loadConfig(), role: 'api' as const, shutdownDelay: 0, ...overrides })
}

/**
 * Runs `work` against a Plinth that serves nothing and runs no workers (the job engine in client
 * mode), logging to standard error at warn (`--verbose`: PLINTH_LOG_LEVEL). It always closes the
 * Plinth, waiting at most 10 s for that (a Redis or job engine that does not answer cannot keep a
 * finished command alive).
 */
export async function withCliPlinth<T>(
  options: CliPlinthOptions,
  work: (plinth: Plinth, logger: Logger) => Promise<T>,
): Promise<T> {
  const config = cliConfig({ ...(options.migrate ? {} : { migrateOnStart: false }) })
  const logger = cliLogger(config, { verbose: options.verbose })
  // On the embedded database, a running server's socket is used instead of failing with PLINTH_DB_LOCKED.
  const plinth = await createPlinth({
    config,
    logger,
    attachToRunning: true,
    ...(options.modules ? { modules: options.modules } : {}),
  })
  try {
    if (options.prepare !== false) {
      await plinth.prepare()
      const pending = await plinth.migrator.pendingCount()
      if (pending > 0)
        throw new CommandFailure(`${pending} migration(s) pending: run "plinth migrate up" first`)
    }
    return await work(plinth, logger)
  } finally {
    let timer: NodeJS.Timeout | undefined
    const deadline = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        logger.warn({ deadlineMs: CLOSE_DEADLINE_MS }, 'closing took too long; exiting anyway')
        resolve()
      }, CLOSE_DEADLINE_MS)
      timer.unref()
    })
    await Promise.race([
      plinth.shutdown().catch((err: unknown) => logger.warn({ err }, 'closing failed')),
      deadline,
    ])
    clearTimeout(timer)
  }
}
