import { createInterface } from 'node:readline'
import { loadConfig } from '../config/load-config.ts'
import { createPitr, type PitrBackup, type PitrStatus, pitrSettingsOf } from '../modules/backups/pitr.ts'
import { verifyByRestore } from '../modules/backups/pitr-scratch.ts'
import { type CliIo, CommandFailure, cliLogger, printJson, UsageError } from './cli-io.ts'
import type { CommandInput } from './cli-spec.ts'

/** Asks a yes/no question on the terminal; anything but "yes" is no. */
async function confirm(question: string): Promise<boolean> {
  if (!process.stdin.isTTY) return false
  const rl = createInterface({ input: process.stdin, output: process.stderr })
  const answer = await new Promise<string>((resolve) => rl.question(question, resolve))
  rl.close()
  return answer.trim().toLowerCase() === 'yes'
}

function formatBackup(b: PitrBackup): string {
  return `${b.label}  ${b.type.padEnd(4)}  ${b.startedAt} .. ${b.finishedAt}  ${(b.sizeBytes / 1048576).toFixed(1)} MiB (repository ${(b.repoBytes / 1048576).toFixed(1)} MiB)  lsn ${b.lsnStart ?? '?'} .. ${b.lsnStop ?? '?'}${b.error ? '  ERROR' : ''}`
}

function formatStatus(st: PitrStatus): string {
  const a = st.archive
  return [
    `stanza ${st.stanza}: repository ${st.repository.ok ? 'ok' : `NOT OK (${st.repository.message})`}`,
    `  last backup: ${st.lastBackup ? `${st.lastBackup.label} (${st.lastBackup.type}), ${st.lastBackupAgeSeconds} s ago` : 'none'}`,
    `  WAL in the repository: ${a.min ?? '-'} .. ${a.max ?? '-'}`,
    `  last archived: ${a.lastArchivedWal ?? '-'} at ${a.lastArchivedAt ?? '-'}; pending ${a.pendingBytes ?? '?'} bytes; lag ${a.lagSeconds === null ? '?' : `${Math.round(a.lagSeconds)} s`}`,
    ...(a.lastFailedWal ? [`  LAST FAILED archive: ${a.lastFailedWal} at ${a.lastFailedAt}`] : []),
    ...st.backups.map((b) => `  ${formatBackup(b)}`),
  ].join('\n')
}

/**
 * `plinth pitr setup | backup | status | restore`: drives pgBackRest (src/modules/backups/pitr.ts).
 * It boots no Plinth: a restore must work when the database is gone. `setup` and `status` read the
 * server at DATABASE_URL when it is set.
 */
export async function pitrCommand(input: CommandInput, io: CliIo): Promise<number> {
  const action = input.action as 'setup' | 'backup' | 'status' | 'restore' | 'verify'
  const values = input.values
  if (action === 'restore') {
    if (Boolean(values['to-time']) === Boolean(values['to-lsn']))
      throw new UsageError('restore needs exactly one of --to-time <ISO time> or --to-lsn <LSN>')
  }
  const config = loadConfig()
  const logger = cliLogger(config, { verbose: input.verbose })
  const pitr = createPitr({ settings: pitrSettingsOf(config), logger })
  const print = (json: unknown, text: string) => (input.json ? printJson(io, json) : io.out(text))
  const databaseUrl = config.databaseUrl
  if (action === 'setup') {
    const result = await pitr.setup({ apply: Boolean(values.apply), databaseUrl })
    print(
      result,
      [
        `pgBackRest configuration: ${result.configPath}`,
        ...result.steps.map((s) => `  ${s.ok ? 'ok  ' : 'TODO'} ${s.name}: ${s.detail}`),
        ...(result.ready
          ? ['point-in-time recovery is ready: take a first backup (plinth pitr backup --type full)']
          : [
              'server settings to apply (as a superuser), then restart the server and run plinth pitr setup again:',
              ...result.sql.map((l) => `  ${l}`),
            ]),
      ].join('\n'),
    )
    return result.ready ? 0 : 1
  }
  if (action === 'backup') {
    const type = (values.type as 'full' | 'diff' | 'incr' | undefined) ?? 'full'
    const b = await pitr.backup(type)
    print(b, `pgBackRest backup ${formatBackup(b)}`)
    return 0
  }
  if (action === 'verify') {
    const v = await pitr.verify()
    const restore =
      values.restore && v.ok
        ? await verifyByRestore(pitr.settings, { logger, databaseUrl, pgBin: config.pitrPgBin })
        : null
    const ok = v.ok && (restore?.ok ?? true)
    print(
      { ...v, ok, restore },
      [
        `pgbackrest verify: ${v.ok ? 'ok' : 'FAILED'} ${v.detail}`,
        ...(restore
          ? [
              `restore into a scratch cluster: ${restore.ok ? 'ok' : 'FAILED'} (${(restore.restoreMs / 1000).toFixed(1)} s)`,
              ...restore.checks.map((c) => `  ${c.ok ? 'ok  ' : 'FAIL'} ${c.name}: ${c.detail}`),
            ]
          : []),
      ].join('\n'),
    )
    return ok ? 0 : 1
  }
  if (action === 'status') {
    const st = await pitr.status({ databaseUrl })
    print(st, formatStatus(st))
    return st.repository.ok ? 0 : 1
  }
  const pgData = (values['pg-data'] as string | undefined) ?? pitr.settings.pgData
  const target = (values['to-time'] as string | undefined) ?? (values['to-lsn'] as string)
  if (!values.yes) {
    const ok = await confirm(
      `Restore stanza ${pitr.settings.stanza} to ${target} into ${pgData}${values.force ? ' (OVERWRITING what it holds)' : ''}? Type "yes": `,
    )
    if (!ok) throw new CommandFailure('not confirmed: nothing was restored (pass --yes to skip the question)')
  }
  const result = await pitr.restore({
    toTime: values['to-time'] as string | undefined,
    toLsn: values['to-lsn'] as string | undefined,
    pgData,
    force: Boolean(values.force),
  })
  print(
    result,
    `restored stanza ${pitr.settings.stanza} into ${result.pgData} up to ${result.type} ${result.target} in ${(result.durationMs / 1000).toFixed(1)} s; start the server on it (it recovers to the target, then promotes)`,
  )
  return 0
}
