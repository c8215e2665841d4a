import { handleProcessSignals, SIGNAL_RELAY_ENV } from '../app/lifecycle.ts'
import { loadConfig } from '../config/load-config.ts'
import { PLINTH_VERSION } from '../core/version.ts'
import { prestartEmbeddedDatabase } from '../infra/db/embedded-prestart.ts'
import { createLogger } from '../observability/logger.ts'
import { startTracing } from '../observability/tracing.ts'
import { isPlinthError } from '../shared/errors.ts'
import type { CliIo } from './cli-io.ts'
import type { CommandInput } from './cli-spec.ts'

type Role = 'api' | 'worker' | 'all'

/** `plinth start [--role api|worker|all]`: the server logs to standard output, as services do. */
export async function startCommand(input: CommandInput, _io: CliIo): Promise<number> {
  const role = input.values.role as Role | undefined
  // Meant for this process alone (bin/plinth.js relays its signals here): not for its children.
  const relayed = process.env[SIGNAL_RELAY_ENV] === '1'
  delete process.env[SIGNAL_RELAY_ENV]
  const loaded = loadConfig()
  const config = role ? Object.freeze({ ...loaded, role }) : loaded
  const logger = createLogger(config)
  // The embedded database first: its worker opens the cluster on the other core while this thread
  // loads the application (~1 s of imports); createPlinth adopts it (decision 0034).
  const prestartedDatabase = prestartEmbeddedDatabase(config, { logger })
  try {
    // Tracing first (when configured), then the server: nothing of the server is loaded before.
    const tracing = await startTracing(config, { logger, version: PLINTH_VERSION })
    const { createPlinth } = await import('../app/create-plinth.ts')
    const plinth = await createPlinth({
      config,
      logger,
      ...(tracing ? { tracing } : {}),
      ...(prestartedDatabase ? { prestartedDatabase } : {}),
      prepareEarly: true,
    })
    handleProcessSignals(plinth, { logger, relayed })
    await plinth.listen()
    if (!plinth.context.mailer.canDeliver)
      logger.warn(
        { env: config.env, signupMode: config.signupMode },
        `no SMTP_URL: e-mail cannot be sent in ${config.env}, so password resets fail and POST /api/v1/admin/invites answers 503 PLINTH_MAIL_UNAVAILABLE${config.signupMode === 'invite' ? ' (sign-up is invite-only: nobody can join until SMTP_URL is set, or an administrator creates accounts)' : ''}; set SMTP_URL and PLINTH_MAIL_FROM`,
      )
    // The process now lives until a signal; handleProcessSignals decides the exit code.
    return await new Promise<number>(() => {})
  } catch (err) {
    await prestartedDatabase?.close().catch(() => {})
    // A refusal Plinth explains (configuration, keys, database) is logged without a stack trace.
    if (isPlinthError(err)) logger.fatal({ code: err.code }, `plinth could not start: ${err.message}`)
    else logger.fatal({ err }, 'plinth could not start')
    logger.flush()
    throw err
  }
}
