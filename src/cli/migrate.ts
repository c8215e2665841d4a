import { builtinModules } from '../app/modules.ts'
import { loadConfig } from '../config/load-config.ts'
import { createDatabase } from '../infra/db/create-db.ts'
import { createMigrator } from '../infra/db/migrator.ts'
import { createLogger } from '../observability/logger.ts'
import { type CliIo, parseCommandArgs, UsageError } from './cli-io.ts'

export const migrateUsage = `Usage: plinth migrate <up [--to N] | down [--to N] | status>

  up            apply every pending migration
  up --to N     apply pending migrations numbered up to N
  down          revert the newest applied migration
  down --to N   revert every migration numbered above N (0 reverts all)
  status        list migrations, applied and pending

Runs under a PostgreSQL advisory lock: safe while other replicas start or migrate.`

export async function migrateCommand(args: readonly string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseCommandArgs(args, { to: { type: 'string' } }, migrateUsage, true)
  const [action, ...extra] = positionals
  if (!action || !['up', 'down', 'status'].includes(action) || extra.length > 0) {
    throw new UsageError(
      action ? `unknown action "${positionals.join(' ')}"` : 'missing action',
      migrateUsage,
    )
  }
  if (values.to !== undefined && (action === 'status' || !/^\d+$/.test(values.to))) {
    throw new UsageError('--to takes a migration number and goes with "up" or "down"', migrateUsage)
  }

  const config = loadConfig()
  const logger = createLogger(config)
  const db = await createDatabase(config, { logger, attachToRunning: true })
  try {
    await db.connect()
    const migrator = createMigrator(db, Object.assign({}, ...builtinModules.map((m) => m.migrations ?? {})), {
      logger,
    })
    if (action === 'status') {
      for (const m of await migrator.status()) {
        io.out(
          `${m.appliedAt ? 'applied' : 'pending'}  ${m.name}${m.appliedAt ? `  (${m.appliedAt.toISOString()})` : ''}`,
        )
      }
      return 0
    }
    const done =
      action === 'up'
        ? await migrator.up()
        : await migrator.down(values.to === undefined ? {} : { to: Number(values.to) })
    io.out(
      done.length === 0
        ? 'Nothing to do.'
        : done.map((n) => `${action === 'up' ? 'applied' : 'reverted'}  ${n}`).join('\n'),
    )
    return 0
  } finally {
    await db.close()
    logger.flush()
  }
}
