import { createPlinth } from '../app/create-plinth.ts'
import { builtinModules } from '../app/modules.ts'
import { loadConfig } from '../config/load-config.ts'
import { cliCaller } from '../core/audit.ts'
import { type BackupSummary, backupServiceOf } from '../modules/backups/backups.module.ts'
import type { Verification } from '../modules/backups/verification.ts'
import { createLogger, logDestination } from '../observability/logger.ts'
import { type CliIo, parseCommandArgs, UsageError } from './cli-io.ts'

export const backupUsage = `Usage: plinth backup <create | list | show <id> | verify <id> | restore <id> … | prune [--dry-run]> [--json]

  create             back up the database now (pg_dump -Fc on a server, PGlite's data directory
                     when embedded) into PLINTH_BACKUP_DIR, then verify it (--no-verify to skip)
  list               every backup, newest first, with its verification status
  show <id>          one backup's manifest and last verification
  verify <id>        restore it to a scratch target (a scratch database beside DATABASE_URL, or an
                     in-memory PGlite) and check checksums, migration head, row counts and the
                     audit chain; the result is stored with the backup; exit 1 when it fails
  restore <id>       --target <DATABASE_URL> (server backups) or --data-dir <DIR> (embedded ones);
                     refuses a backup from newer code, and a non-empty target unless --force --yes
                     (server: pg_restore --clean; embedded: the old directory is moved aside)
  prune              delete the backups grandfather-father-son retention does not keep
                     (PLINTH_BACKUP_KEEP_HOURLY/DAILY/WEEKLY/MONTHLY; the newest verified backup
                     always stays; damaged ones are listed, never deleted); --dry-run only lists
  --json             print JSON instead of text

The archive is encrypted: a restore needs this server's data keys or the PLINTH_MASTER_KEY the
backup was made under (docs/operations/backups.md).`

const OPTIONS = {
  json: { type: 'boolean' },
  'no-verify': { type: 'boolean' },
  target: { type: 'string' },
  'data-dir': { type: 'string' },
  force: { type: 'boolean' },
  yes: { type: 'boolean' },
  'dry-run': { type: 'boolean' },
} as const

function formatList(list: readonly BackupSummary[]): string {
  if (list.length === 0) return 'no backups'
  const rows = list.map((b) => [
    b.id,
    b.manifest?.kind ?? '?',
    b.status,
    b.manifest ? `${(b.manifest.parts[0]!.bytes / 1048576).toFixed(1)} MiB` : '',
    b.manifest?.migrationHead ?? '',
  ])
  const head = ['ID', 'KIND', 'STATUS', 'SIZE', 'MIGRATION']
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)))
  return [head, ...rows]
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i]!))
        .join('  ')
        .trimEnd(),
    )
    .join('\n')
}

function formatVerification(v: Verification): string {
  return [
    `backup ${v.id}: ${v.ok ? 'VERIFIED' : 'FAILED'} (${v.durationMs} ms)`,
    ...v.checks.map((c) => `  ${c.ok ? 'ok  ' : 'FAIL'} ${c.name}: ${c.detail}`),
  ].join('\n')
}

function formatShow(b: BackupSummary): string {
  const m = b.manifest
  const lines = [`backup ${b.id}: ${b.status}${b.problem ? ` (${b.problem})` : ''}`]
  if (m) {
    const rows = Object.values(m.rowCounts).reduce((a, n) => a + n, 0)
    lines.push(
      `  kind ${m.kind} (${m.engine}), PostgreSQL ${m.postgresVersion}, Plinth ${m.plinthVersion}`,
      `  taken ${m.startedAt} .. ${m.finishedAt}`,
      `  migration head ${m.migrationHead ?? 'none'}; audit head ${m.auditHead ? `seq ${m.auditHead.seq}` : 'none'}`,
      `  ${Object.keys(m.rowCounts).length} tables, ${rows} rows; archive ${m.parts[0]!.bytes} bytes (dump ${m.parts[0]!.dumpBytes}), sha256 ${m.parts[0]!.sha256}`,
    )
  }
  if (b.verification) lines.push(formatVerification(b.verification))
  return lines.join('\n')
}

/** `plinth backup create | list | show | verify | restore`. */
export async function backupCommand(args: readonly string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseCommandArgs(args, OPTIONS, backupUsage, true)
  const [action, id, ...extra] = positionals
  const actions = ['create', 'list', 'show', 'verify', 'restore', 'prune']
  if (!action || !actions.includes(action))
    throw new UsageError(action ? `unknown action "${action}"` : 'missing action', backupUsage)
  const needsId = ['show', 'verify', 'restore'].includes(action)
  if (needsId && !id)
    throw new UsageError(`"${action}" needs a backup id (see "plinth backup list")`, backupUsage)
  if ((!needsId && id !== undefined) || extra.length > 0)
    throw new UsageError(`unexpected "${[id, ...extra].filter(Boolean).join(' ')}"`, backupUsage)
  if (action !== 'restore' && (values.target || values['data-dir'] || values.force || values.yes))
    throw new UsageError('--target, --data-dir, --force and --yes go with "restore"', backupUsage)
  if (action !== 'create' && values['no-verify'])
    throw new UsageError('--no-verify goes with "create"', backupUsage)
  if (action === 'restore') {
    if (Boolean(values.target) === Boolean(values['data-dir']))
      throw new UsageError(
        'restore needs exactly one of --target <DATABASE_URL> or --data-dir <DIR>',
        backupUsage,
      )
    if (values.force && !values.yes)
      throw new UsageError('--force replaces what the target holds: add --yes once you are sure', backupUsage)
  }

  // No drain delay and no workers: nothing routes traffic to a CLI process.
  const config = Object.freeze({ ...loadConfig(), shutdownDelay: 0, role: 'api' as const })
  const logger = createLogger(config, logDestination(2))
  const plinth = await createPlinth({ config, logger })
  const print = (json: unknown, text: string) => io.out(values.json ? JSON.stringify(json, null, 2) : text)
  try {
    await plinth.prepare()
    const service = backupServiceOf(plinth.context)
    const caller = cliCaller()
    if (action === 'list') {
      const list = await service.list()
      print({ backups: list }, formatList(list))
      return 0
    }
    if (action === 'show') {
      const b = await service.show(id!)
      print(b, formatShow(b))
      return 0
    }
    if (action === 'create') {
      const created = await service.create({ caller })
      if (!values['no-verify']) await service.verify(created.id, { caller })
      const b = await service.show(created.id)
      print(b, formatShow(b))
      return b.status === 'failed' ? 1 : 0
    }
    if (action === 'prune') {
      const plan = await service.prune({ dryRun: Boolean(values['dry-run']), caller })
      const verb = plan.dryRun ? 'would remove' : 'removed'
      print(
        plan,
        [
          ...plan.remove.map((r) => `${verb} ${r.id}: ${r.reason}`),
          ...plan.keep.map((k) => `keep ${k.id}: ${k.reasons.join(', ')}`),
          ...plan.damaged.map((id) => `DAMAGED ${id}: left alone, look at it (plinth backup show ${id})`),
          `${plan.keep.length} kept, ${plan.remove.length} ${verb}${plan.dryRun ? ' (dry run: nothing deleted)' : ''}`,
        ].join('\n'),
      )
      return 0
    }
    if (action === 'verify') {
      const v = await service.verify(id!, { caller })
      print(v, formatVerification(v))
      return v.ok ? 0 : 1
    }
    const knownMigrations = builtinModules.flatMap((m) => Object.keys(m.migrations ?? {}))
    const result = await service.restore(id!, {
      databaseUrl: values.target,
      dataDir: values['data-dir'],
      force: Boolean(values.force),
      knownMigrations,
      caller,
    })
    print(
      result,
      `restored backup ${result.id} into ${result.target}; row counts ${result.matches ? 'match the manifest' : 'DIFFER from the manifest'}` +
        (result.replaced ? `; the previous database was moved to ${result.replaced}` : ''),
    )
    return result.matches ? 0 : 1
  } finally {
    await plinth.shutdown()
    logger.flush()
  }
}
