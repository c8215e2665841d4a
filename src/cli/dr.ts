import { cliCaller } from '../core/audit.ts'
import { type DrillReport, drillsOf } from '../modules/backups/backups.module.ts'
import { type CliIo, printJson } from './cli-io.ts'
import { withCliPlinth } from './cli-plinth.ts'
import type { CommandInput } from './cli-spec.ts'

function rpoText(r: DrillReport): string {
  if (r.rpoBasis === 'canaries') return 'last canary committed before the disaster → newest canary recovered'
  if (r.rpoBasis === 'wal-archive') return 'WAL archive lag'
  return "age of the backup's snapshot"
}

function formatDrill(r: DrillReport): string {
  const mark = (ok: boolean) => (ok ? 'meets' : 'MISSES')
  const rto =
    r.rtoBasis === 'ready'
      ? `start of the restore → /ready 200 on the restored copy; restore alone ${r.restoreSeconds?.toFixed(1)} s`
      : 'restore to a scratch target'
  return [
    `drill ${r.id}: ${r.ok ? 'PASSED' : 'FAILED'} on backup ${r.backupId} (${r.backupKind}${r.freshBackup ? ', taken by the drill' : ''})`,
    `  RTO ${r.rtoSeconds.toFixed(1)} s (${rto}) — ${mark(r.meetsTargets.rto)} the ${r.targets.rtoSeconds} s goal`,
    `  RPO ${r.rpoSeconds.toFixed(1)} s (${rpoText(r)}) — ${mark(r.meetsTargets.rpo)} the ${r.targets.rpoSeconds} s goal`,
    ...(r.walArchiveLagSeconds != null
      ? [`  WAL archive lag ${r.walArchiveLagSeconds.toFixed(1)} s (what a point-in-time restore would lose)`]
      : []),
    ...(r.pitr
      ? [
          `  point-in-time recovery through pgBackRest ${r.pitr.toTime ? `to ${r.pitr.toTime}: ${r.pitr.recovered}/${r.pitr.expected} canaries, ${r.pitr.mismatches} mismatch(es)` : 'to the end of the archived WAL'}`,
        ]
      : []),
    ...r.checks.map((c) => `  ${c.ok ? 'ok  ' : 'FAIL'} ${c.name}: ${c.detail}`),
  ].join('\n')
}

/** `plinth dr drill | list`. */
export async function drCommand(input: CommandInput, io: CliIo): Promise<number> {
  const print = (json: unknown, text: string) => (input.json ? printJson(io, json) : io.out(text))
  return withCliPlinth({ verbose: input.verbose }, async (plinth) => {
    const drills = drillsOf(plinth.context)
    if (input.action === 'list') {
      const all = await drills.list()
      print(
        { drills: all },
        all.length === 0
          ? 'no drills'
          : all
              .map(
                (r) =>
                  `${r.id}  ${r.ok ? 'passed' : 'FAILED'}  backup ${r.backupId}  RTO ${r.rtoSeconds.toFixed(1)} s (${r.rtoBasis ?? 'restore'})  RPO ${r.rpoSeconds.toFixed(1)} s (${r.rpoBasis})`,
              )
              .join('\n'),
      )
      return 0
    }
    const report = await drills.run({
      caller: cliCaller(),
      fresh: Boolean(input.values.fresh),
      pitr:
        input.values.pitr || input.values['to-time']
          ? { toTime: input.values['to-time'] as string | undefined }
          : undefined,
    })
    print(report, formatDrill(report))
    return report.ok ? 0 : 1
  })
}
