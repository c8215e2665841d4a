import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Logger } from 'pino'
import { type Audit, type AuditCaller, callerEntry } from '../../core/audit.ts'
import type { InstanceDatabase, InstanceLauncher } from '../../core/instances.ts'
import type { Database } from '../../infra/db/create-db.ts'
import { PlinthError } from '../../shared/errors.ts'
import type { BackupService } from './backup.service.ts'
import { canaryTimes, hasCanaries, newestCanary, writeCanary } from './canaries.ts'
import { readFacts } from './database-facts.ts'
import type { BackupTarget } from './local-target.ts'
import { connectTo, createScratchDatabase } from './pg-dump-engine.ts'
import { archiverState, type PitrSettings, parseTargetTime } from './pitr.ts'
import { restoreScratchCluster } from './pitr-scratch.ts'
import type { VerificationCheck } from './verification.ts'

/** The goals of issue #12, beside which every drill reports its figures. */
export const DRILL_TARGETS = { rtoSeconds: 300, rpoSeconds: 60 } as const

/** Where a drill restored the backup: a scratch database (server backups) or a scratch data directory (embedded). */
export type DrillRestoreTarget = InstanceDatabase

/**
 * A disaster-recovery drill. Before the "disaster" it writes a canary row (`backup_canaries`; with
 * `fresh`, one more before taking a fresh backup), then restores the backup (the fresh one, else the
 * newest) to a scratch target, brings a Plinth up on it (`ctx.instances`: `plinth start` in a process
 * of its own on a spare port, from the CLI, the API's job and the schedule alike), and measures:
 *
 * - **RTO**: start of the restore → the restored Plinth's `/ready` answers 200 (`rtoBasis: "ready"`);
 *   with `launch: false`, start of the restore → restore done (`rtoBasis: "restore"`, `ready: null`).
 * - **RPO**: the last canary known committed before the disaster minus the newest canary found in
 *   the restored copy (`rpoBasis: "canaries"`); when the restored copy holds no canary (a backup
 *   older than the first drill), the age of the backup's snapshot (`"backup-age"`). With
 *   point-in-time recovery, `walArchiveLagSeconds` says what a restore through the WAL would lose.
 *
 * The backup is also verified (checksums, row counts, audit chain: `checks`), and its migration head
 * compared with this server's. The scratch target is dropped at the end, whatever happened.
 */
export interface DrillReport {
  readonly id: string
  readonly at: string
  readonly ok: boolean
  readonly backupId: string
  readonly backupKind: string
  readonly rtoSeconds: number
  readonly rpoSeconds: number
  readonly rpoBasis: 'canaries' | 'wal-archive' | 'backup-age'
  readonly targets: typeof DRILL_TARGETS
  readonly meetsTargets: { readonly rto: boolean; readonly rpo: boolean }
  readonly checks: VerificationCheck[]
  /** What `rtoSeconds` measures: up to `/ready` 200 on the restored copy, or only up to the restore's end. */
  readonly rtoBasis?: 'ready' | 'restore'
  /** The restore alone (archive read, checked and loaded into the scratch target). */
  readonly restoreSeconds?: number
  /** The Plinth brought up on the restored copy; null when the drill ran without one (`launch: false`). */
  readonly ready?: {
    readonly reached: boolean
    readonly seconds: number | null
    readonly detail: string
  } | null
  /** The canary rows: the last known committed before the disaster, the newest recovered. */
  readonly canaries?: {
    readonly lastCommittedAt: string
    readonly lastRecoveredAt: string | null
    readonly recovered: number
  } | null
  /** `fresh`: the drill took the backup itself, just after writing a canary. */
  readonly freshBackup?: boolean
  readonly walArchiveLagSeconds?: number | null
  /**
   * A drill through point-in-time recovery (`backupKind: "pgbackrest"`, `backupId` the newest
   * pgBackRest backup's label): the target time, if any, and how the canaries up to it compared.
   */
  readonly pitr?: {
    readonly toTime: string | null
    readonly expected?: number
    readonly recovered?: number
    readonly mismatches?: number
  } | null
}

/** What a PITR drill restores to: the end of the archived WAL, or `toTime` (ISO 8601 with a zone). */
export interface PitrDrillOptions {
  readonly toTime?: string | undefined
}

export interface DrillRunOptions {
  readonly caller?: AuditCaller | undefined
  /** Take a fresh backup (after a canary) and drill on it, instead of the newest one. */
  readonly fresh?: boolean | undefined
  /** Restore through pgBackRest (point-in-time recovery) instead of the newest logical backup. */
  readonly pitr?: PitrDrillOptions | undefined
  /** Bring a Plinth up on the restored copy (RTO up to `/ready` 200): default true. */
  readonly launch?: boolean | undefined
}

export interface Drills {
  run(options?: DrillRunOptions): Promise<DrillReport>
  list(): Promise<DrillReport[]>
  /** @throws PlinthError `PLINTH_DRILL_NOT_FOUND` */
  get(id: string): Promise<DrillReport>
}

const DRILL_ID = /^\d{8}T\d{6}Z-[0-9a-f]{8}$/
const fileOf = (id: string) => `drill-${id}.json`
/** How long a restored Plinth has to answer `/ready` 200. */
const READY_DEADLINE_MS = DRILL_TARGETS.rtoSeconds * 1000
const round = (s: number) => Math.round(s * 1000) / 1000

const drillId = (at: Date) =>
  `${at
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d{3}/, '')}-${randomBytes(4).toString('hex')}`

async function canaryTimesAt(url: string, range: { from?: string | undefined }): Promise<string[]> {
  const conn = connectTo(url)
  try {
    return await canaryTimes(conn.kysely, range)
  } finally {
    await conn.close()
  }
}

async function canariesAt(url: string): Promise<{ at: Date | null; count: number }> {
  const conn = connectTo(url)
  try {
    return await newestCanary(conn.kysely)
  } finally {
    await conn.close()
  }
}

export function createDrills(deps: {
  service: () => BackupService
  target: () => BackupTarget
  db: Database
  audit: Pick<Audit, 'record'>
  logger: Logger
  /** Brings a Plinth up on the restored copy (`ctx.instances`); without one, the RTO stops at the restore. */
  launcher?: InstanceLauncher | undefined
  /** This server's database (the scratch database of a server backup's drill is made beside it). */
  databaseUrl?: string | undefined
  /** The WAL archive lag in seconds when PITR is set up (null: unknown or off). */
  walLag?: (() => Promise<number | null>) | undefined
  /** Point-in-time recovery, when configured (PITR drills). */
  pitr?:
    | (() => {
        readonly settings: PitrSettings
        readonly pgBin?: string | undefined
        /** The label of the newest pgBackRest backup. */
        newestLabel(): Promise<string | null>
      })
    | undefined
  now?: () => Date
}): Drills {
  const now = deps.now ?? (() => new Date())
  const log = deps.logger.child({ component: 'backup-drill' })

  async function run(options: DrillRunOptions = {}): Promise<DrillReport> {
    if (options.pitr) return runPitr(options, options.pitr)
    const started = now()
    const id = drillId(started)
    const live = deps.db.kysely
    const canaryTable = await hasCanaries(live)
    let backupId: string
    if (options.fresh) {
      if (canaryTable) await writeCanary(live, id)
      backupId = (await deps.service().create({ caller: options.caller })).id
    } else {
      const newest = (await deps.service().list()).find((b) => b.manifest !== null && b.status !== 'failed')
      if (!newest)
        throw new PlinthError(
          'PLINTH_DRILL_NO_BACKUP',
          'The backup target holds no usable backup: make one first.',
        )
      backupId = newest.id
    }
    const backup = await deps.service().show(backupId)
    const manifest = backup.manifest
    if (!manifest)
      throw new PlinthError('PLINTH_DRILL_NO_BACKUP', `Backup ${backupId} has no readable manifest.`)
    // The disaster: the last write known to be committed before it.
    const lastCommitted = canaryTable ? await writeCanary(live, id) : null

    const checks: VerificationCheck[] = []
    let restoreSeconds = 0
    let rtoSeconds = 0
    let ready: DrillReport['ready'] = null
    let recovered: { at: Date | null; count: number } | null = null
    let scratchDir: string | undefined
    let scratchDb: { url: string; drop(): Promise<void> } | undefined
    const t0 = performance.now()
    try {
      let target: DrillRestoreTarget
      if (manifest.kind === 'embedded') {
        scratchDir = mkdtempSync(join(tmpdir(), 'plinth-drill-'))
        target = { dataDir: scratchDir }
      } else {
        if (!deps.databaseUrl)
          throw new PlinthError(
            'PLINTH_BACKUP_ENGINE_FAILED',
            'A drill on a server backup needs DATABASE_URL (the scratch database is made beside it).',
          )
        scratchDb = await createScratchDatabase(deps.databaseUrl)
        target = { databaseUrl: scratchDb.url }
      }
      await deps.service().restore(backupId, {
        ...target,
        force: false,
        knownMigrations: manifest.migrationHead ? [manifest.migrationHead] : [],
        caller: options.caller,
      })
      restoreSeconds = (performance.now() - t0) / 1000
      rtoSeconds = restoreSeconds
      checks.push({
        name: 'restore',
        ok: true,
        detail: `restored to a scratch target in ${restoreSeconds.toFixed(1)} s`,
      })
      if (deps.launcher && options.launch !== false) {
        const instance = await deps.launcher.launch(target)
        try {
          const r = await instance.waitReady(READY_DEADLINE_MS)
          const seconds = (performance.now() - t0) / 1000
          ready = { reached: r.ok, seconds: r.ok ? round(seconds) : null, detail: r.detail }
          rtoSeconds = seconds
          checks.push({ name: 'ready', ok: r.ok, detail: `a Plinth on the restored copy: ${r.detail}` })
          // The canaries as the Plinth on the copy serves them (for a data directory, through its socket).
          if (r.ok) recovered = await canariesAt(instance.databaseUrl)
        } finally {
          await instance.stop()
        }
      }
      if (!recovered && scratchDb) recovered = await canariesAt(scratchDb.url)
    } catch (err) {
      rtoSeconds = (performance.now() - t0) / 1000
      checks.push({
        name: 'restore',
        ok: false,
        detail: (err as Error).message,
        code: (err as PlinthError).code,
      })
    } finally {
      await scratchDb
        ?.drop()
        .catch((err: unknown) => log.warn({ err }, 'could not drop the scratch database'))
      if (scratchDir) rmSync(scratchDir, { recursive: true, force: true })
    }

    const verification = await deps.service().verify(backupId, { caller: options.caller })
    checks.push(...verification.checks)
    const head = await readFacts(live)
    checks.push(
      head.migrationHead === manifest.migrationHead
        ? {
            name: 'migrations-current',
            ok: true,
            detail: `the restored database is at this server's migration head (${head.migrationHead ?? 'none'})`,
          }
        : {
            name: 'migrations-current',
            ok: false,
            detail: `the backup is at ${manifest.migrationHead}, this server at ${head.migrationHead}: after restoring it, run plinth migrate up`,
          },
    )

    let rpoBasis: DrillReport['rpoBasis'] = 'backup-age'
    let rpoSeconds = (started.getTime() - Date.parse(manifest.startedAt)) / 1000
    let canaries: DrillReport['canaries'] = null
    if (lastCommitted) {
      canaries = {
        lastCommittedAt: lastCommitted.toISOString(),
        lastRecoveredAt: recovered?.at?.toISOString() ?? null,
        recovered: recovered?.count ?? 0,
      }
      if (recovered?.at) {
        rpoBasis = 'canaries'
        rpoSeconds = (lastCommitted.getTime() - recovered.at.getTime()) / 1000
      } else {
        rpoSeconds = (lastCommitted.getTime() - Date.parse(manifest.startedAt)) / 1000
      }
    }
    const lag = await deps.walLag?.().catch((err: unknown) => {
      log.warn({ err }, 'could not read the WAL archive lag')
      return null
    })
    const ok = checks.every((c) => c.ok)
    const report: DrillReport = {
      id,
      at: started.toISOString(),
      ok,
      backupId,
      backupKind: manifest.kind,
      rtoSeconds: round(rtoSeconds),
      rpoSeconds: round(rpoSeconds),
      rpoBasis,
      targets: DRILL_TARGETS,
      meetsTargets: {
        rto: rtoSeconds <= DRILL_TARGETS.rtoSeconds && (ready === null || ready.reached),
        rpo: rpoSeconds <= DRILL_TARGETS.rpoSeconds,
      },
      checks,
      rtoBasis: ready?.reached ? 'ready' : 'restore',
      restoreSeconds: round(restoreSeconds),
      ready,
      canaries,
      freshBackup: Boolean(options.fresh),
      walArchiveLagSeconds: lag ?? null,
    }
    return finish(report, options.caller)
  }

  /** Stores the report in the backup target, audits it (`backup:drilled`) and logs it. */
  async function finish(report: DrillReport, caller: AuditCaller | undefined): Promise<DrillReport> {
    await deps.target().writeText(fileOf(report.id), `${JSON.stringify(report, null, 2)}\n`)
    await deps.audit.record(
      deps.db.kysely,
      callerEntry(
        caller ?? { actor: { type: 'system', id: 'backups' } },
        'backup:drilled',
        { type: 'backup', id: report.backupId },
        {
          outcome: report.ok ? 'success' : 'failure',
          details: {
            drill: report.id,
            kind: report.backupKind,
            rtoSeconds: report.rtoSeconds,
            rpoSeconds: report.rpoSeconds,
            rpoBasis: report.rpoBasis,
            rtoBasis: report.rtoBasis,
          },
        },
      ),
    )
    const { id, backupId, ok, rtoSeconds, rpoSeconds, rpoBasis, rtoBasis } = report
    log.info(
      { drill: id, backupId, ok, rtoSeconds, rpoSeconds, rpoBasis, rtoBasis },
      'disaster-recovery drill done',
    )
    return report
  }

  /**
   * A drill through point-in-time recovery (pgBackRest): without `toTime`, a workload of canaries
   * (one a second for one archive timeout and 5 s more) before the disaster canary, then a restore
   * of the repository to the end of the archived WAL; with `toTime`, a restore to that time, every
   * canary committed by then must be there and none after (`pitr-target`). Either way into a
   * scratch cluster, with a Plinth brought up on it for the RTO.
   */
  async function runPitr(options: DrillRunOptions, pitrOptions: PitrDrillOptions): Promise<DrillReport> {
    const started = now()
    const id = drillId(started)
    // PLINTH_PITR_NOT_CONFIGURED naming what is missing, when PITR is half set up.
    const pitr = deps.pitr?.()
    const settings = pitr?.settings
    const url = deps.databaseUrl
    if (!pitr || !settings || !url)
      throw new PlinthError(
        'PLINTH_PITR_NOT_CONFIGURED',
        'Point-in-time recovery is not configured: a PITR drill needs PLINTH_PITR_STANZA (and the other PLINTH_PITR_* settings) and DATABASE_URL.',
      )
    const target = pitrOptions.toTime ? parseTargetTime(pitrOptions.toTime) : undefined
    const live = deps.db.kysely
    if (!(await hasCanaries(live)))
      throw new PlinthError(
        'PLINTH_DRILL_NO_BACKUP',
        'The database has no backup_canaries table: migrate it first.',
      )
    if (!target) {
      // A steady workload, so that what the restore lacks measures what archiving lost.
      const until = Date.now() + (settings.archiveTimeoutSeconds + 5) * 1000
      while (Date.now() < until) {
        await writeCanary(live, id)
        await new Promise((r) => setTimeout(r, 1000))
      }
    }
    const lastCommitted = await writeCanary(live, id)
    // The disaster: the repository as it is now. Replay stops at the last segment archived so far,
    // though the live server goes on archiving while the drill restores.
    const walUpTo = target ? undefined : (await archiverState(url, now())).lastArchivedWal?.slice(0, 24)
    const label = (await pitr.newestLabel().catch(() => null)) ?? 'pgbackrest'
    const checks: VerificationCheck[] = []
    let restoreSeconds = 0
    let rtoSeconds = 0
    let ready: DrillReport['ready'] = null
    let recovered: { at: Date | null; count: number } | null = null
    let targetCheck: { expected: number; recovered: number; mismatches: number } | null = null
    const t0 = performance.now()
    try {
      const cluster = await restoreScratchCluster(settings, target ? { type: 'time', target } : { walUpTo }, {
        logger: deps.logger,
        pgBin: pitr.pgBin,
      })
      try {
        restoreSeconds = (performance.now() - t0) / 1000
        rtoSeconds = restoreSeconds
        checks.push({
          name: 'restore',
          ok: true,
          detail: `pgbackrest restore ${target ? `to ${target}` : 'to the end of the archived WAL'} and a PostgreSQL server on it in ${restoreSeconds.toFixed(1)} s`,
        })
        const copyUrl = cluster.urlFor(url)
        if (deps.launcher && options.launch !== false) {
          const instance = await deps.launcher.launch({ databaseUrl: copyUrl })
          try {
            const r = await instance.waitReady(READY_DEADLINE_MS)
            const seconds = (performance.now() - t0) / 1000
            ready = { reached: r.ok, seconds: r.ok ? round(seconds) : null, detail: r.detail }
            rtoSeconds = seconds
            checks.push({ name: 'ready', ok: r.ok, detail: `a Plinth on the restored copy: ${r.detail}` })
          } finally {
            await instance.stop()
          }
        }
        recovered = await canariesAt(copyUrl)
        if (target) {
          // Only canaries the live database still keeps (it keeps the newest 100) are compared.
          const oldest = (await canaryTimes(live))[0]
          const want = new Set(await canaryTimes(live, { upTo: target }))
          const have = new Set(await canaryTimesAt(copyUrl, { from: oldest }))
          const mismatches =
            [...want].filter((t) => !have.has(t)).length + [...have].filter((t) => !want.has(t)).length
          targetCheck = { expected: want.size, recovered: have.size, mismatches }
          checks.push({
            name: 'pitr-target',
            ok: mismatches === 0,
            detail: `${have.size} of the ${want.size} canaries committed by ${target} recovered, ${mismatches} mismatch(es)`,
          })
        }
      } finally {
        await cluster.drop()
      }
    } catch (err) {
      rtoSeconds = (performance.now() - t0) / 1000
      checks.push({
        name: 'restore',
        ok: false,
        detail: (err as Error).message,
        code: (err as PlinthError).code,
      })
    }
    let rpoSeconds = (lastCommitted.getTime() - started.getTime()) / 1000
    let rpoBasis: DrillReport['rpoBasis'] = 'backup-age'
    if (recovered?.at) {
      rpoBasis = 'canaries'
      rpoSeconds = (lastCommitted.getTime() - recovered.at.getTime()) / 1000
    }
    const lag = await deps.walLag?.().catch(() => null)
    const ok = checks.every((c) => c.ok)
    return finish(
      {
        id,
        at: started.toISOString(),
        ok,
        backupId: label,
        backupKind: 'pgbackrest',
        rtoSeconds: round(rtoSeconds),
        rpoSeconds: round(rpoSeconds),
        rpoBasis,
        targets: DRILL_TARGETS,
        meetsTargets: {
          rto: rtoSeconds <= DRILL_TARGETS.rtoSeconds && (ready === null || ready.reached),
          // A drill to a past time restores on purpose what is older: its RPO is not the disaster's.
          rpo: target ? true : rpoSeconds <= DRILL_TARGETS.rpoSeconds,
        },
        checks,
        rtoBasis: ready?.reached ? 'ready' : 'restore',
        restoreSeconds: round(restoreSeconds),
        ready,
        canaries: {
          lastCommittedAt: lastCommitted.toISOString(),
          lastRecoveredAt: recovered?.at?.toISOString() ?? null,
          recovered: recovered?.count ?? 0,
        },
        freshBackup: false,
        walArchiveLagSeconds: lag ?? null,
        pitr: { toTime: pitrOptions.toTime ?? null, ...(targetCheck ?? {}) },
      },
      options.caller,
    )
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
