import { defaultModules } from '../app/create-plinth.ts'
import { assertModules } from '../app/module-checks.ts'
import { loadConfig } from '../config/load-config.ts'
import { createDatabase } from '../infra/db/create-db.ts'
import { createMigrator } from '../infra/db/migrator.ts'
import { type CliIo, cliLogger, printJson, UsageError } from './cli-io.ts'
import type { CommandInput } from './cli-spec.ts'

/** `plinth migrate up|down [--to N] | status`. */
export async function migrateCommand(input: CommandInput, io: CliIo): Promise<number> {
  const action = input.action as 'up' | 'down' | 'status'
  const to = input.values.to as string | undefined
  if (to !== undefined && !/^\d+$/.test(to)) throw new UsageError('--to takes a migration number')

  // An application's modules are checked as at start: an irreversible migration is never applied.
  const modules = defaultModules()
  assertModules(modules)
  const config = loadConfig()
  const logger = cliLogger(config, { verbose: input.verbose })
  const db = await createDatabase(config, { logger, attachToRunning: true })
  try {
    await db.connect()
    const migrator = createMigrator(db, Object.assign({}, ...modules.map((m) => m.migrations ?? {})), {
      logger,
    })
    if (action === 'status') {
      const status = await migrator.status()
      if (input.json)
        printJson(
          io,
          status.map((m) => ({
            name: m.name,
            applied: Boolean(m.appliedAt),
            appliedAt: m.appliedAt?.toISOString() ?? null,
          })),
        )
      else
        for (const m of status)
          io.out(
            `${m.appliedAt ? 'applied' : 'pending'}  ${m.name}${m.appliedAt ? `  (${m.appliedAt.toISOString()})` : ''}`,
          )
      return 0
    }
    const done =
      action === 'up'
        ? await migrator.up(to === undefined ? {} : { to: Number(to) })
        : await migrator.down(to === undefined ? {} : { to: Number(to) })
    if (input.json) printJson(io, { action, done })
    else
      io.out(
        done.length === 0
          ? 'Nothing to do.'
          : done.map((n) => `${action === 'up' ? 'applied' : 'reverted'}  ${n}`).join('\n'),
      )
    return 0
  } finally {
    await db.close()
  }
}
