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

/** Registers the backup metrics on this instance's registry (values of the backups this process made or verified). */
export function createBackupMetrics(metrics: Metrics): BackupMetrics {
  const registers = [metrics.registry]
  const lastSuccess = new Gauge({
    name: 'plinth_backup_last_success_timestamp_seconds',
    help: 'When the last backup this process made was published (Unix seconds), by kind.',
    labelNames: ['kind'] as const,
    registers,
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
      lastSuccess.set({ kind }, Date.now() / 1000)
      duration.set({ kind }, seconds)
      size.set({ kind }, bytes)
    },
    failed(stage) {
      failures.inc({ stage })
    },
    verified(kind, ok) {
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
