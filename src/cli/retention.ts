import type { RetentionReport } from '../core/retention.ts'
import { type CliIo, printJson } from './cli-io.ts'
import { withCliPlinth } from './cli-plinth.ts'
import type { CommandInput } from './cli-spec.ts'

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
export async function retentionCommand(input: CommandInput, io: CliIo): Promise<number> {
  const action = input.action as 'run' | 'list'
  // list only reads the declarations; run connects (and refuses pending migrations).
  return withCliPlinth({ verbose: input.verbose, prepare: action === 'run' }, async (plinth) => {
    if (action === 'list') {
      const rules = plinth.retention.rules.map((r) => ({ rule: r.name, describe: r.describe }))
      if (input.json) printJson(io, rules)
      else {
        const width = Math.max(...rules.map((r) => r.rule.length), 4)
        for (const r of rules) io.out(`${r.rule.padEnd(width)}  ${r.describe}`)
      }
      return 0
    }
    // Closing the Plinth also seals the run's audit row into the chain.
    const report = await plinth.retention.run({ trigger: 'cli' })
    if (input.json) printJson(io, report)
    else io.out(reportText(report))
    return report.ok ? 0 : 1
  })
}
