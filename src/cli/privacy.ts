import { createPrivacyService } from '../modules/privacy/privacy.service.ts'
import { type CliIo, printJson, UsageError } from './cli-io.ts'
import { withCliPlinth } from './cli-plinth.ts'
import type { CommandInput } from './cli-spec.ts'

/** `plinth privacy export | erase --user <id|email> [--yes]`. */
export async function privacyCommand(input: CommandInput, io: CliIo): Promise<number> {
  const action = input.action as 'export' | 'erase'
  const user = (input.values.user as string | undefined)?.trim()
  if (!user) throw new UsageError('--user needs a user id or an e-mail address')
  if (action === 'erase' && !input.values.yes)
    throw new UsageError('erasure cannot be undone: add --yes once you are sure')

  return withCliPlinth({ verbose: input.verbose, migrate: true }, async (plinth) => {
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
      printJson(io, data)
      return 0
    }
    const report = await privacy.erase(userId, { via: 'cli' })
    if (input.json) {
      printJson(io, { userId, pseudonym: report.pseudonym, rows: report.rows })
      return 0
    }
    const rows = Object.entries(report.rows)
      .filter(([, n]) => n > 0)
      .map(([table, n]) => `${table} ${n}`)
    io.out(`erased user ${userId}; audit rows now name ${report.pseudonym}`)
    io.out(`rows: ${rows.length > 0 ? rows.join(', ') : 'none'}`)
    return 0
  })
}
