import { sql } from 'kysely'
import { Counter, Gauge } from 'prom-client'
import type { Database } from '../../infra/db/create-db.ts'
import type { Metrics } from '../../observability/metrics.ts'

export interface FilesMetrics {
  upload(outcome: 'stored' | 'deduplicated' | 'refused', bytes?: number): void
  imageJob(outcome: 'succeeded' | 'failed'): void
  transform(result: 'hit' | 'miss'): void
}

const made = new WeakMap<Metrics, FilesMetrics>()

/** The files metrics of this instance's registry (created once per registry: routes and jobs share them). */
export function filesMetrics(metrics: Metrics, db: Database): FilesMetrics {
  const existing = made.get(metrics)
  if (existing) return existing
  const registers = [metrics.registry]
  const uploads = new Counter({
    name: 'plinth_files_uploads_total',
    help: 'Files received by POST /api/v1/files, by outcome: stored, deduplicated (the owner already had these bytes), refused (a 4xx: size, quota, type, image, scan).',
    labelNames: ['outcome'] as const,
    registers,
  })
  const uploadBytes = new Counter({
    name: 'plinth_files_uploaded_bytes_total',
    help: 'Bytes of the files stored by this process (deduplicated uploads count nothing).',
    registers,
  })
  const imageJobs = new Counter({
    name: 'plinth_files_image_jobs_total',
    help: 'Runs of the files.image-variants job by outcome.',
    labelNames: ['outcome'] as const,
    registers,
  })
  const transforms = new Counter({
    name: 'plinth_files_transform_cache_total',
    help: 'Image variant and transform requests, by whether the variant was already stored (hit) or made then (miss).',
    labelNames: ['result'] as const,
    registers,
  })
  new Gauge({
    name: 'plinth_files_stored_bytes',
    help: 'Bytes of all stored files (originals, from the files table; variants not included), read at scrape time.',
    registers,
    async collect() {
      try {
        const row = await db.kysely
          .selectFrom('files')
          .select(sql<string>`coalesce(sum(size), 0)`.as('bytes'))
          .executeTakeFirst()
        this.set(Number(row?.bytes ?? 0))
      } catch {
        // Database down or table not migrated yet: keep the last value.
      }
    },
  })
  const value: FilesMetrics = {
    upload(outcome, bytes) {
      uploads.inc({ outcome })
      if (outcome === 'stored' && bytes) uploadBytes.inc(bytes)
    },
    imageJob: (outcome) => imageJobs.inc({ outcome }),
    transform: (result) => transforms.inc({ result }),
  }
  made.set(metrics, value)
  return value
}
