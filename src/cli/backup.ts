import type { Logger } from 'pino'
import { createPlinth, defaultModules } from '../app/create-plinth.ts'
import type { PlinthConfig } from '../config/config.schema.ts'
import { cliCaller } from '../core/audit.ts'
import {
  type BackupSummary,
  backupServiceOf,
  erasedIn,
  readTombstones,
  type Tombstone,
  tombstonesOf,
} from '../modules/backups/backups.module.ts'
import type { Verification } from '../modules/backups/verification.ts'
import { createPrivacyService } from '../modules/privacy/privacy.service.ts'
import { type CliIo, printJson, UsageError } from './cli-io.ts'
import { cliConfig, withCliPlinth } from './cli-plinth.ts'
import type { CommandInput } from './cli-spec.ts'

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

/**
 * The tombstones to re-apply: those in the backup target, merged with every erasure the live
 * database's audit log records (whichever process made it); the target's alone when that fails.
 */
async function syncedTombstones(
  ctx: Parameters<typeof tombstonesOf>[0],
  target: Parameters<typeof readTombstones>[0],
): Promise<Tombstone[]> {
  return tombstonesOf(ctx)
    .sync()
    .catch(() => readTombstones(target))
}

/**
 * Erases again, in the restored database, everyone an erasure tombstone names (the backup may be
 * older than their erasure): a Plinth on the restored database, its users matched against the
 * tombstones' pseudonyms, and the privacy module's erasure for each (with its audit row).
 */
async function reapplyErasures(
  overrides: Partial<PlinthConfig>,
  tombstones: readonly Tombstone[],
  logger: Logger,
): Promise<string[]> {
  if (tombstones.length === 0) return []
  const config = cliConfig(overrides)
  const restored = await createPlinth({ config, logger, modules: defaultModules() })
  try {
    await restored.prepare()
    const ids: string[] = []
    for (let offset = 0; ; offset += 500) {
      const page = await restored.context.users.list({ limit: 500, offset })
      ids.push(...page.map((u) => u.id))
      if (page.length < 500) break
    }
    const again = erasedIn(ids, tombstones, config.secretKey)
    const privacy = createPrivacyService(restored.context)
    for (const id of again) await privacy.erase(id, { via: 'cli' })
    return again
  } finally {
    await restored
      .shutdown()
      .catch((err: unknown) => logger.warn({ err }, 'closing the restored database failed'))
  }
}

const MIB = 1048576

/**
 * A progress bar on standard error, one line per tenth of the archive read (so that it reads well
 * in a terminal and in a log alike): `restoring <id> [#####-----]  50%  12.0 / 24.0 MiB`.
 */
export function progressBar(io: CliIo, label: string): (read: number, total: number) => void {
  let shown = -1
  return (read, total) => {
    const ratio = total > 0 ? Math.min(1, read / total) : 1
    const step = Math.floor(ratio * 10)
    if (step <= shown) return
    shown = step
    io.err(
      `${label} [${'#'.repeat(step)}${'-'.repeat(10 - step)}] ${String(Math.round(ratio * 100)).padStart(3)}%  ${(read / MIB).toFixed(1)} / ${(total / MIB).toFixed(1)} MiB`,
    )
  }
}

/** `plinth backup create | list | show | verify | restore | prune`. */
export async function backupCommand(input: CommandInput, io: CliIo): Promise<number> {
  const action = input.action as
    | 'create'
    | 'list'
    | 'show'
    | 'verify'
    | 'restore'
    | 'prune'
    | 'reapply-erasures'
  const id = input.args[0]
  const values = input.values
  if (action === 'restore' || action === 'reapply-erasures') {
    if (Boolean(values.target) === Boolean(values['data-dir']))
      throw new UsageError('restore needs exactly one of --target <DATABASE_URL> or --data-dir <DIR>')
    if (action === 'restore' && values.force && !values.yes)
      throw new UsageError('--force replaces what the target holds: add --yes once you are sure')
  }
  const print = (json: unknown, text: string) => (input.json ? printJson(io, json) : io.out(text))
  // Applies pending migrations (PLINTH_MIGRATE_ON_START), as a server start would: a restore may run
  // from a fresh process whose own database is new.
  return withCliPlinth({ verbose: input.verbose, migrate: true }, async (plinth, logger) => {
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
      if (!input.values['no-verify']) await service.verify(created.id, { caller })
      const b = await service.show(created.id)
      print(b, formatShow(b))
      return b.status === 'failed' ? 1 : 0
    }
    if (action === 'prune') {
      const plan = await service.prune({ dryRun: Boolean(input.values['dry-run']), caller })
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
    if (action === 'reapply-erasures') {
      const target = input.values.target as string | undefined
      const again = await reapplyErasures(
        target
          ? { databaseUrl: target }
          : { databaseUrl: undefined, dataDir: input.values['data-dir'] as string },
        await syncedTombstones(plinth.context, service.target),
        logger,
      )
      print({ erasuresReapplied: again.length }, `${again.length} erasure(s) re-applied`)
      return 0
    }
    const knownMigrations = defaultModules().flatMap((m) => Object.keys(m.migrations ?? {}))
    const result = await service.restore(id!, {
      databaseUrl: input.values.target as string | undefined,
      dataDir: input.values['data-dir'] as string | undefined,
      force: Boolean(input.values.force),
      knownMigrations,
      caller,
      // The files part goes back where this instance's modules keep those files.
      filesDirs: new Map(plinth.context.backupPaths.map((p) => [`${p.module}/${p.name}`, p.path])),
      // On a terminal's standard error only (or with --progress), never with --json.
      ...(!input.json && (input.values.progress || process.stderr.isTTY)
        ? { onProgress: progressBar(io, `restoring ${id}`) }
        : {}),
    })
    const tombstones = await syncedTombstones(plinth.context, service.target)
    const target = input.values.target as string | undefined
    const reErased = await reapplyErasures(
      target
        ? { databaseUrl: target }
        : { databaseUrl: undefined, dataDir: input.values['data-dir'] as string },
      tombstones,
      logger,
    )
    print(
      { ...result, erasuresReapplied: reErased.length },
      `restored backup ${result.id} into ${result.target}; row counts ${result.matches ? 'match the manifest' : 'DIFFER from the manifest'}` +
        (result.replaced ? `; the previous database was moved to ${result.replaced}` : '') +
        `; ${reErased.length} erasure(s) made since re-applied` +
        (result.filesRestored !== undefined ? `; ${result.filesRestored} file(s) restored` : ''),
    )
    return result.matches ? 0 : 1
  })
}
