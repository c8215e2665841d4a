import { sql } from 'kysely'
import { loadConfig } from '../config/load-config.ts'
import { createDatabase, type Database } from '../infra/db/create-db.ts'
import { createAudit } from '../modules/audit/audit.service.ts'
import { pruneAudit, verifyAuditChain } from '../modules/audit/audit-chain.ts'
import { type AuditFilter, exportAudit } from '../modules/audit/audit-query.ts'
import { type CliIo, CommandFailure, cliLogger, printJson, UsageError } from './cli-io.ts'
import type { CommandInput } from './cli-spec.ts'

function time(name: string, value: string | undefined): Date | undefined {
  if (value === undefined) return undefined
  const t = new Date(value)
  if (Number.isNaN(t.getTime()))
    throw new UsageError(`--${name} needs a time such as 2025-01-31 or 2025-01-31T12:00:00Z`)
  return t
}

type ExportOption =
  | 'from'
  | 'to'
  | 'action'
  | 'actor'
  | 'target-type'
  | 'target-id'
  | 'outcome'
  | 'request-id'

function filterOf(values: CommandInput['values']): AuditFilter {
  const v = values as Partial<Record<ExportOption, string>>
  if (v.action !== undefined && !/^[a-z][a-z0-9_-]*:([a-z][a-z0-9_-]*|\*)$/.test(v.action))
    throw new UsageError('--action looks like user:role-changed or user:*')
  return {
    from: time('from', v.from),
    to: time('to', v.to),
    action: v.action,
    actor: v.actor,
    targetType: v['target-type'],
    targetId: v['target-id'],
    outcome: v.outcome as AuditFilter['outcome'],
    requestId: v['request-id'],
  }
}

async function assertAuditTables(db: Database): Promise<void> {
  const { rows } = await sql<{ t: string | null }>`select to_regclass('audit_log')::text as t`.execute(
    db.kysely,
  )
  if (!rows[0]?.t) throw new CommandFailure('the audit log does not exist yet: run "plinth migrate up" first')
}

/** `plinth audit verify | export | prune`. */
export async function auditCommand(input: CommandInput, io: CliIo): Promise<number> {
  const action = input.action as 'verify' | 'export' | 'prune'
  const filter = action === 'export' ? filterOf(input.values) : {}

  const config = loadConfig()
  const logger = cliLogger(config, { verbose: input.verbose })
  const db = await createDatabase(config, { logger, attachToRunning: true })
  try {
    await db.connect()
    await assertAuditTables(db)
    if (action === 'verify') {
      const report = await verifyAuditChain(db.kysely)
      if (input.json) {
        printJson(io, { valid: !report.failure, ...report, head: report.head ?? null })
        if (report.failure)
          io.err(`audit chain BROKEN at row seq ${report.failure.seq}: ${report.failure.message}`)
        return report.failure ? 1 : 0
      }
      const from = report.from.checkpoint
        ? `from the checkpoint after seq ${report.from.seq}`
        : 'from the start'
      const waiting = report.unsealed > 0 ? `; ${report.unsealed} newer row(s) wait to be sealed` : ''
      if (!report.failure) {
        io.out(
          `audit chain valid: ${report.checked} row(s) ${from}` +
            (report.head ? `, newest seq ${report.head.seq} hash ${report.head.hash}` : '') +
            waiting,
        )
        if (report.erased > 0)
          io.out(
            `${report.erased} row(s) pseudonymised by erasure` +
              (report.unverifiable > 0
                ? `, ${report.unverifiable} of them sealed before hash v2: only their place in the chain is checked`
                : ''),
          )
        return 0
      }
      const f = report.failure
      io.err(
        `audit chain BROKEN at row seq ${f.seq} (id ${f.id}): ${f.message}\n` +
          `${report.checked} row(s) before it verified (${from}). See docs/operations/audit.md.`,
      )
      return 1
    }
    if (action === 'export') {
      for await (const entry of exportAudit(db.kysely, filter)) io.out(JSON.stringify(entry))
      return 0
    }
    const before = new Date(Date.now() - config.auditRetention)
    const result = await pruneAudit(db.kysely, { before })
    // The pruning's own audit row joins the chain now rather than at the next start.
    const audit = createAudit({ db: db.kysely, logger })
    await audit.seal()
    await audit.close()
    if (input.json) {
      printJson(io, {
        pruned: result.pruned,
        before: before.toISOString(),
        checkpoint: result.checkpoint ?? null,
      })
      return 0
    }
    io.out(
      result.checkpoint
        ? `pruned ${result.pruned} row(s) older than ${before.toISOString()}; the chain now starts after seq ${result.checkpoint.lastSeq} (hash ${result.checkpoint.lastHash})`
        : `nothing older than ${before.toISOString()} to prune`,
    )
    return 0
  } finally {
    await db.close()
  }
}
