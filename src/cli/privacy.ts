import { createPlinth } from '../app/create-plinth.ts'
import { loadConfig } from '../config/load-config.ts'
import { createPrivacyService } from '../modules/privacy/privacy.service.ts'
import { createLogger, logDestination } from '../observability/logger.ts'
import { type CliIo, parseCommandArgs, UsageError } from './cli-io.ts'

export const privacyUsage = `Usage: plinth privacy <export | erase> --user <id | e-mail address> [--yes]

  export   print everything Plinth holds about the user as one JSON document (what
           GET /api/v1/me/export gives them); audited as privacy:exported
  erase    erase the user: their account, sessions, API tokens, second factor, e-mail and every
           other registered row go or lose their link to them; audit rows are kept, pseudonymised,
           and the erasure is audited (user:erased). Irreversible: needs --yes. Refuses the last
           active administrator.

Logs go to standard error, so standard output holds only the JSON (or the erasure's summary).
Reads the database of the configuration (DATABASE_URL, or the embedded one in PLINTH_DATA_DIR,
which a running server keeps locked). See docs/operations/privacy.md.`

/** `plinth privacy export | erase --user <id|email> [--yes]`. */
export async function privacyCommand(args: readonly string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseCommandArgs(
    args,
    { user: { type: 'string' }, yes: { type: 'boolean' } },
    privacyUsage,
    true,
  )
  const [action, ...extra] = positionals
  if (!action || !['export', 'erase'].includes(action) || extra.length > 0)
    throw new UsageError(
      action ? `unknown action "${positionals.join(' ')}"` : 'missing action',
      privacyUsage,
    )
  const user = values.user?.trim()
  if (!user) throw new UsageError('--user needs a user id or an e-mail address', privacyUsage)
  if (action === 'export' && values.yes) throw new UsageError('--yes goes with "erase"', privacyUsage)
  if (action === 'erase' && !values.yes)
    throw new UsageError('erasure cannot be undone: add --yes once you are sure', privacyUsage)

  // No drain delay and no workers: nothing routes traffic to a CLI process.
  const config = Object.freeze({ ...loadConfig(), shutdownDelay: 0, role: 'api' as const })
  const logger = createLogger(config, logDestination(2))
  const plinth = await createPlinth({ config, logger, attachToRunning: true })
  try {
    await plinth.prepare()
    const pending = await plinth.migrator.pendingCount()
    if (pending > 0) {
      io.err(`plinth privacy: ${pending} migration(s) pending: run "plinth migrate up" first`)
      return 1
    }
    const privacy = createPrivacyService(plinth.context)
    const userId = await privacy.resolveUser(user)
    if (action === 'export') {
      const data = await privacy.export(userId)
      await plinth.context.audit.record(plinth.db.kysely, {
        action: 'privacy:exported',
        actor: { type: 'system' },
        target: { type: 'user', id: userId },
        outcome: 'success',
        details: { via: 'cli' },
      })
      io.out(JSON.stringify(data, null, 2))
      return 0
    }
    const report = await privacy.erase(userId, { via: 'cli' })
    const rows = Object.entries(report.rows)
      .filter(([, n]) => n > 0)
      .map(([table, n]) => `${table} ${n}`)
    io.out(`erased user ${userId}; audit rows now name ${report.pseudonym}`)
    io.out(`rows: ${rows.length > 0 ? rows.join(', ') : 'none'}`)
    return 0
  } finally {
    await plinth.shutdown()
    logger.flush()
  }
}
