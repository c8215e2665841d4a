import { randomBytes } from 'node:crypto'
import type { Logger } from 'pino'
import { type Audit, type AuditCaller, callerEntry } from '../../core/audit.ts'
import type { Database } from '../../infra/db/create-db.ts'
import { PlinthError } from '../../shared/errors.ts'
import type { BackupService } from './backup.service.ts'
import { readFacts } from './database-facts.ts'
import type { BackupTarget } from './local-target.ts'
import type { VerificationCheck } from './verification.ts'

/** The goals of issue #12, beside which every drill reports its figures. */
export const DRILL_TARGETS = { rtoSeconds: 300, rpoSeconds: 60 } as const

/**
 * A disaster-recovery drill: the newest backup restored to a scratch target and checked (the
 * verification: checksums, row counts, audit chain), plus "would this server run on it" (migration
 * head equal to this server's). RTO is the measured time from the start of the restore to the end
 * of the checks; RPO is what a disaster now would lose: the WAL archive lag when point-in-time
 * recovery is on, else the age of the backup's snapshot.
 */
export interface DrillReport {
  readonly id: string
  readonly at: string
  readonly ok: boolean
  readonly backupId: string
  readonly backupKind: string
  readonly rtoSeconds: number
  readonly rpoSeconds: number
  readonly rpoBasis: 'wal-archive' | 'backup-age'
  readonly targets: typeof DRILL_TARGETS
  readonly meetsTargets: { readonly rto: boolean; readonly rpo: boolean }
  readonly checks: VerificationCheck[]
}

export interface Drills {
  run(options?: { caller?: AuditCaller | undefined }): Promise<DrillReport>
  list(): Promise<DrillReport[]>
  /** @throws PlinthError `PLINTH_DRILL_NOT_FOUND` */
  get(id: string): Promise<DrillReport>
}

const DRILL_ID = /^\d{8}T\d{6}Z-[0-9a-f]{8}$/
const fileOf = (id: string) => `drill-${id}.json`

export function createDrills(deps: {
  service: () => BackupService
  target: () => BackupTarget
  db: Database
  audit: Pick<Audit, 'record'>
  logger: Logger
  /** The WAL archive lag in seconds when PITR is set up (null: unknown or off). */
  walLag?: (() => Promise<number | null>) | undefined
  now?: () => Date
}): Drills {
  const now = deps.now ?? (() => new Date())
  const log = deps.logger.child({ component: 'backup-drill' })

  async function run(options: { caller?: AuditCaller | undefined } = {}): Promise<DrillReport> {
    const started = now()
    const id = `${started
      .toISOString()
      .replace(/[-:]/g, '')
      .replace(/\.\d{3}/, '')}-${randomBytes(4).toString('hex')}`
    const newest = (await deps.service().list()).find((b) => b.manifest !== null && b.status !== 'failed')
    if (!newest?.manifest)
      throw new PlinthError(
        'PLINTH_DRILL_NO_BACKUP',
        'The backup target holds no usable backup: make one first.',
      )
    const t0 = now().getTime()
    const verification = await deps.service().verify(newest.id, { caller: options.caller })
    const live = await readFacts(deps.db.kysely)
    const checks: VerificationCheck[] = [...verification.checks]
    checks.push(
      live.migrationHead === newest.manifest.migrationHead
        ? {
            name: 'migrations-current',
            ok: true,
            detail: `the restored database is at this server's migration head (${live.migrationHead ?? 'none'})`,
          }
        : {
            name: 'migrations-current',
            ok: false,
            detail: `the backup is at ${newest.manifest.migrationHead}, this server at ${live.migrationHead}: after restoring it, run plinth migrate up`,
          },
    )
    const rtoSeconds = (now().getTime() - t0) / 1000
    let rpoBasis: DrillReport['rpoBasis'] = 'backup-age'
    let rpoSeconds = (started.getTime() - Date.parse(newest.manifest.startedAt)) / 1000
    const lag = await deps.walLag?.().catch((err: unknown) => {
      log.warn({ err }, 'could not read the WAL archive lag')
      return null
    })
    if (lag !== null && lag !== undefined) {
      rpoBasis = 'wal-archive'
      rpoSeconds = lag
    }
    const ok = checks.every((c) => c.ok)
    const report: DrillReport = {
      id,
      at: started.toISOString(),
      ok,
      backupId: newest.id,
      backupKind: newest.manifest.kind,
      rtoSeconds: Math.round(rtoSeconds * 1000) / 1000,
      rpoSeconds: Math.round(rpoSeconds * 1000) / 1000,
      rpoBasis,
      targets: DRILL_TARGETS,
      meetsTargets: {
        rto: rtoSeconds <= DRILL_TARGETS.rtoSeconds,
        rpo: rpoSeconds <= DRILL_TARGETS.rpoSeconds,
      },
      checks,
    }
    await deps.target().writeText(fileOf(id), `${JSON.stringify(report, null, 2)}\n`)
    await deps.audit.record(
      deps.db.kysely,
      callerEntry(
        options.caller ?? { actor: { type: 'system', id: 'backups' } },
        'backup:drilled',
        { type: 'backup', id: newest.id },
        {
          outcome: ok ? 'success' : 'failure',
          details: { drill: id, rtoSeconds: report.rtoSeconds, rpoSeconds: report.rpoSeconds, rpoBasis },
        },
      ),
    )
    log.info(
      { drill: id, backupId: newest.id, ok, rtoSeconds, rpoSeconds, rpoBasis },
      'disaster-recovery drill done',
    )
    return report
  }

  async function get(id: string): Promise<DrillReport> {
    const text = DRILL_ID.test(id) ? await deps.target().readText(fileOf(id)) : undefined
    if (text === undefined) throw new PlinthError('PLINTH_DRILL_NOT_FOUND', `No drill ${id}.`)
    return JSON.parse(text) as DrillReport
  }

  async function list(): Promise<DrillReport[]> {
    const ids = (await deps.target().list())
      .filter((n) => n.startsWith('drill-') && n.endsWith('.json'))
      .map((n) => n.slice('drill-'.length, -'.json'.length))
      .filter((id) => DRILL_ID.test(id))
      .sort()
      .reverse()
    const reports = await Promise.all(ids.map((id) => get(id).catch(() => undefined)))
    return reports.filter((r): r is DrillReport => r !== undefined)
  }

  return Object.freeze({ run, list, get })
}
