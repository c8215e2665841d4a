import { Counter, Gauge } from 'prom-client'
import type { Metrics } from '../../observability/metrics.ts'

/** What the service reports to the metrics as it works. */
export interface BackupMetrics {
  created(kind: string, seconds: number, bytes: number): void
  failed(stage: 'create' | 'verify'): void
  verified(kind: string, ok: boolean): void
  /** A pgBackRest backup finished (Unix seconds of its end). */
  pitrBackedUp?(finishedAtSeconds: number): void
}

/** When the newest verified backup of each kind finished (Unix seconds), as the backup target lists them. */
export type NewestVerified = () => Promise<ReadonlyMap<string, number>>

/** How long a read of the backup target serves scrapes before the next scrape reads it again. */
export const NEWEST_VERIFIED_TTL_MS = 60_000

/**
 * Registers the backup metrics on this instance's registry. `plinth_backup_last_success_timestamp_seconds`
 * is the newest verified backup in the backup target (read by `newestVerified` on a scrape, at most
 * once a `NEWEST_VERIFIED_TTL_MS` and again after this process made or verified a backup), so every
 * replica reports the same fact from its first scrape; without `newestVerified` it has no value. The
 * others are what this process did.
 */
export function createBackupMetrics(
  metrics: Metrics,
  newestVerified?: NewestVerified,
  now: () => number = Date.now,
): BackupMetrics {
  const registers = [metrics.registry]
  let read: { at: number; value: Promise<void> } | undefined
  new Gauge({
    name: 'plinth_backup_last_success_timestamp_seconds',
    help: 'When the newest verified backup in the backup target finished (Unix seconds), by kind: read from the target, so every replica reports it; absent while the target holds no verified backup.',
    labelNames: ['kind'] as const,
    registers,
    async collect() {
      if (!newestVerified) return
      if (!read || now() - read.at > NEWEST_VERIFIED_TTL_MS) {
        const value = newestVerified().then(
          (newest) => {
            this.reset()
            for (const [kind, at] of newest) this.set({ kind }, at)
          },
          () => {
            // The target does not answer: the values stay what they were until the next read;
            // /health says why.
          },
        )
        read = { at: now(), value }
      }
      await read.value
    },
  })
  const duration = new Gauge({
    name: 'plinth_backup_last_duration_seconds',
    help: 'How long the last backup this process made took (dump, compress, encrypt, write, check), by kind.',
    labelNames: ['kind'] as const,
    registers,
  })
  const size = new Gauge({
    name: 'plinth_backup_last_size_bytes',
    help: 'Size of the last backup archive this process made, by kind.',
    labelNames: ['kind'] as const,
    registers,
  })
  const failures = new Counter({
    name: 'plinth_backup_failures_total',
    help: 'Backups that failed, by stage (create: no backup was published; verify: the verification failed).',
    labelNames: ['stage'] as const,
    registers,
  })
  const verificationFailures = new Counter({
    name: 'plinth_backup_verification_failures_total',
    help: 'Verifications (after a backup, scheduled re-verifications, pgbackrest verify) that failed, by kind: alert on any increase.',
    labelNames: ['kind'] as const,
    registers,
  })
  const pitrLast = new Gauge({
    name: 'plinth_pitr_last_backup_timestamp_seconds',
    help: 'When the last pgBackRest backup this process ran finished (Unix seconds).',
    registers,
  })
  const verifications = new Counter({
    name: 'plinth_backup_verifications_total',
    help: 'Verifications run by this process, by kind and result.',
    labelNames: ['kind', 'result'] as const,
    registers,
  })
  return {
    created(kind, seconds, bytes) {
      // The next scrape reads the target again (the new backup counts once it verified).
      read = undefined
      duration.set({ kind }, seconds)
      size.set({ kind }, bytes)
    },
    failed(stage) {
      failures.inc({ stage })
    },
    verified(kind, ok) {
      read = undefined
      verifications.inc({ kind, result: ok ? 'ok' : 'failed' })
      if (!ok) {
        failures.inc({ stage: 'verify' })
        verificationFailures.inc({ kind })
      }
    },
    pitrBackedUp(at) {
      pitrLast.set(at)
    },
  }
}

/**
 * `plinth_wal_archive_lag_seconds`: read from `pg_stat_archiver` at each scrape (one cheap query),
 * the age of the oldest write not yet archived (0 when nothing is pending; see `archiverState`).
 * Registered only when PITR is configured on a server database.
 */
export function registerWalLagMetric(metrics: Metrics, read: () => Promise<number | null>): void {
  new Gauge({
    name: 'plinth_wal_archive_lag_seconds',
    help: 'Age of the oldest WAL not yet archived to the pgBackRest repository (0: nothing pending); bounds the recovery point (RPO).',
    registers: [metrics.registry],
    async collect() {
      try {
        const lag = await read()
        if (lag !== null) this.set(lag)
      } catch {
        // The database does not answer: the value stays what it was; /health says why.
      }
    },
  })
}
