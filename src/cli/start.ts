import { createPlinth } from '../app/create-plinth.ts'
import { handleProcessSignals } from '../app/lifecycle.ts'
import { loadConfig } from '../config/load-config.ts'
import { createLogger } from '../observability/logger.ts'
import { type CliIo, parseCommandArgs, UsageError } from './cli-io.ts'

export const startUsage = `Usage: plinth start [--role api|worker|all]

Starts Plinth: connects to the database (retrying up to PLINTH_DB_CONNECT_DEADLINE), applies
pending migrations (PLINTH_MIGRATE_ON_START) and serves HTTP on HOST:PORT.

Options:
  --role api      serve the HTTP API and enqueue work, run no workers
  --role worker   run workers; serve only /live, /ready, /health and /api/metrics
  --role all      both (default; PLINTH_ROLE sets it too)

SIGTERM or SIGINT shuts down gracefully; a second signal forces the exit.`

const ROLES = ['api', 'worker', 'all'] as const

export async function startCommand(args: readonly string[], _io: CliIo): Promise<number> {
  const { values } = parseCommandArgs(args, { role: { type: 'string' } }, startUsage)
  const role = values.role
  if (role !== undefined && !(ROLES as readonly string[]).includes(role)) {
    throw new UsageError(`--role must be one of ${ROLES.join(', ')}`, startUsage)
  }
  const loaded = loadConfig()
  const config = role ? Object.freeze({ ...loaded, role: role as (typeof ROLES)[number] }) : loaded
  const logger = createLogger(config)
  try {
    const plinth = await createPlinth({ config, logger })
    handleProcessSignals(plinth, { logger })
    await plinth.listen()
    // The process now lives until a signal; handleProcessSignals decides the exit code.
    return await new Promise<number>(() => {})
  } catch (err) {
    logger.fatal({ err }, 'plinth could not start')
    logger.flush()
    throw err
  }
}
