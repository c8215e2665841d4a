import { createPlinth, type Plinth } from '../app/create-plinth.ts'
import { loadConfig } from '../config/load-config.ts'
import type { RetentionReport } from '../core/retention.ts'
import { type CliIo, parseCommandArgs, UsageError } from './cli-io.ts'

export const retentionUsage = `Usage: plinth retention <run | list> [--json]

  run     delete what every retention rule finds expired, now, and print the counts (exit 1 when a
          rule failed; the others still ran); the same work as the built-in "plinth.retention" job
  list    print the rules and what each deletes

Periods: PLINTH_SESSION_RETENTION, PLINTH_MAIL_RETENTION, PLINTH_WEBHOOKS_RETENTION,
PLINTH_AUDIT_RETENTION; the job's schedule: PLINTH_RETENTION_CRON (docs/operations/retention.md).
Options: --json prints JSON instead of text.
Connects with the server's configuration (DATABASE_URL…) and runs no workers. On the embedded
database, stop the server first: only one process may open its data directory.`

function reportText(report: RetentionReport): string {
  const width = Math.max(...report.results.map((r) => r.rule.length), 4)
  const lines = report.results.map(
    (r) =>
      `  ${r.rule.padEnd(width)}  ${String(r.deleted).padStart(7)}  ${r.error ? `FAILED: ${r.error}` : r.describe}`,
  )
  const failed = report.results.filter((r) => r.error !== undefined).length
  return [
    `retention ${report.ok ? 'done' : `finished with ${failed} failed rule(s)`}: ${report.deleted} row(s) deleted in ${report.durationMs} ms`,
    ...lines,
  ].join('\n')
}

/** `plinth retention run | list`. */
export async function retentionCommand(args: readonly string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseCommandArgs(args, { json: { type: 'boolean' } }, retentionUsage, true)
  const [action, ...extra] = positionals
  if (!action || !['run', 'list'].includes(action) || extra.length > 0)
    throw new UsageError(
      action ? `unknown action "${positionals.join(' ')}"` : 'missing action',
      retentionUsage,
    )

  const config = { ...loadConfig(), role: 'api' as const, migrateOnStart: false, shutdownDelay: 0 }
  const plinth: Plinth = await createPlinth({ config, attachToRunning: true })
  try {
    if (action === 'list') {
      const rules = plinth.retention.rules.map((r) => ({ rule: r.name, describe: r.describe }))
      if (values.json) io.out(JSON.stringify(rules, null, 2))
      else {
        const width = Math.max(...rules.map((r) => r.rule.length), 4)
        for (const r of rules) io.out(`${r.rule.padEnd(width)}  ${r.describe}`)
      }
      return 0
    }
    await plinth.prepare()
    if ((await plinth.migrator.pendingCount()) > 0)
      throw new Error('migrations are pending: run "plinth migrate up" first')
    const report = await plinth.retention.run({ trigger: 'cli' })
    io.out(values.json ? JSON.stringify(report, null, 2) : reportText(report))
    return report.ok ? 0 : 1
  } finally {
    // also seals the run's audit row into the chain
    await plinth.shutdown()
  }
}
