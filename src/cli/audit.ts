import { sql } from 'kysely'
import { loadConfig } from '../config/load-config.ts'
import { createDatabase, type Database } from '../infra/db/create-db.ts'
import { createAudit } from '../modules/audit/audit.service.ts'
import { pruneAudit, verifyAuditChain } from '../modules/audit/audit-chain.ts'
import { type AuditFilter, exportAudit } from '../modules/audit/audit-query.ts'
import { createLogger } from '../observability/logger.ts'
import { type CliIo, parseCommandArgs, UsageError } from './cli-io.ts'

export const auditUsage = `Usage: plinth audit <verify | export [filters] | prune>

  verify    walk the audit log's hash chain from the last retention checkpoint; exit 0 when every
            row holds (prints the count and the newest row's hash), 1 naming the first row that
            does not and why
  export    print the audit log as NDJSON, oldest first (the rows GET /api/v1/audit/export gives);
            filters: --from <time> --to <time> --action <noun:verb|noun:*> --actor <user id>
            --target-type <type> --target-id <id> --outcome <success|failure> --request-id <id>
  prune     delete rows older than PLINTH_AUDIT_RETENTION, after verifying them, and record a
            checkpoint so that the chain still verifies (docs/operations/audit.md)

Reads the database of the configuration (DATABASE_URL, or the embedded one in PLINTH_DATA_DIR,
which a running server keeps locked: use the server's own PostgreSQL for a live system).`

const EXPORT_OPTIONS = {
  from: { type: 'string' },
  to: { type: 'string' },
  action: { type: 'string' },
  actor: { type: 'string' },
  'target-type': { type: 'string' },
  'target-id': { type: 'string' },
  outcome: { type: 'string' },
  'request-id': { type: 'string' },
} as const

function time(name: string, value: string | undefined): Date | undefined {
  if (value === undefined) return undefined
  const t = new Date(value)
  if (Number.isNaN(t.getTime()))
    throw new UsageError(`--${name} needs a time such as 2025-01-31 or 2025-01-31T12:00:00Z`, auditUsage)
  return t
}

function filterOf(values: Record<string, string | boolean | undefined>): AuditFilter {
  const v = values as Record<keyof typeof EXPORT_OPTIONS, string | undefined>
  if (v.outcome !== undefined && v.outcome !== 'success' && v.outcome !== 'failure')
    throw new UsageError('--outcome is success or failure', auditUsage)
  if (v.action !== undefined && !/^[a-z][a-z0-9_-]*:([a-z][a-z0-9_-]*|\*)$/.test(v.action))
    throw new UsageError('--action looks like user:role-changed or user:*', auditUsage)
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
  if (!rows[0]?.t) throw new Error('the audit log does not exist yet: run "plinth migrate up" first')
}

/** `plinth audit verify | export | prune`. */
export async function auditCommand(args: readonly string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseCommandArgs(args, EXPORT_OPTIONS, auditUsage, true)
  const [action, ...extra] = positionals
  if (!action || !['verify', 'export', 'prune'].includes(action) || extra.length > 0)
    throw new UsageError(action ? `unknown action "${positionals.join(' ')}"` : 'missing action', auditUsage)
  const given = Object.keys(values).filter((k) => values[k as keyof typeof values] !== undefined)
  if (action !== 'export' && given.length > 0)
    throw new UsageError(`--${given[0]} goes with "export" only`, auditUsage)
  const filter = action === 'export' ? filterOf(values) : {}

  const config = loadConfig()
  const logger = createLogger(config)
  const db = await createDatabase(config, { logger, attachToRunning: true })
  try {
    await db.connect()
    await assertAuditTables(db)
    if (action === 'verify') {
      const report = await verifyAuditChain(db.kysely)
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
    io.out(
      result.checkpoint
        ? `pruned ${result.pruned} row(s) older than ${before.toISOString()}; the chain now starts after seq ${result.checkpoint.lastSeq} (hash ${result.checkpoint.lastHash})`
        : `nothing older than ${before.toISOString()} to prune`,
    )
    return 0
  } finally {
    await db.close()
    logger.flush()
  }
}
