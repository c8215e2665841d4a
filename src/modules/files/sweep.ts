import { createHash, randomUUID } from 'node:crypto'
import { readdir, rm, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { sql } from 'kysely'
import { Type } from 'typebox'
import type { PlinthConfig } from '../../config/config.schema.ts'
import { defineJob } from '../../core/jobs.ts'
import type { BuiltinSchedule, ModuleContext } from '../../core/module.ts'
import { createFilesService, giveKeyBack, ownerLock, UPLOAD_STALE_MS } from './files.service.ts'
import { objectKey, parseObjectKey } from './storage/file-storage.ts'
import { TUS_EXPIRY_MS } from './tus-store.ts'

export const SWEEP_JOB = 'files.sweep'
export const SWEEP_SCHEDULE_ID = 'plinth.files-sweep'

/** The built-in sweep schedule (`PLINTH_FILES_SWEEP_CRON`; none when `off`). */
export function sweepSchedules(config: Pick<PlinthConfig, 'filesSweepCron'>): BuiltinSchedule[] {
  if (config.filesSweepCron === 'off') return []
  return [
    {
      id: SWEEP_SCHEDULE_ID,
      input: {
        jobName: SWEEP_JOB,
        cron: config.filesSweepCron,
        description: 'Reconciles file rows and stored objects (docs/operations/files.md)',
      },
    },
  ]
}

/** Staged uploads older than this are leftovers of a crash (an upload in flight is younger). */
const STAGING_GRACE_MS = 60 * 60 * 1000

/** What a sweep found and did. */
export interface SweepReport {
  /** Objects listed in the storage (originals and variants). */
  readonly objects: number
  /** Objects (and variants) no row refers to: removed, unless `dryRun`. */
  readonly orphanObjects: readonly string[]
  /** Rows whose object is missing (reported, never deleted: restore the object from a backup). */
  readonly missingObjects: readonly { id: string; owner: string; sha256: string }[]
  /** Staged uploads left by a crash, removed. */
  readonly staleStaging: number
  readonly dryRun: boolean
}

/**
 * Reconciles the files table with the storage: objects without a row go (each after re-checking,
 * under the owner's lock, that no upload committed one meanwhile), rows without an object are
 * reported, staged leftovers go.
 */
export async function sweepFiles(
  ctx: ModuleContext,
  options: { dryRun?: boolean } = {},
): Promise<SweepReport> {
  const service = createFilesService(ctx)
  const store = await service.storage()
  const db = ctx.db.kysely
  const dryRun = options.dryRun ?? false
  // Reservations of uploads whose process died: their objects (no row refers to them) become
  // orphans below.
  const staleUploads = dryRun
    ? 0
    : Number(
        (
          await db
            .deleteFrom('file_uploads')
            .where('started', '<', new Date(ctx.now() - UPLOAD_STALE_MS))
            .executeTakeFirst()
        ).numDeletedRows,
      )
  const rows = await db.selectFrom('files').select(['id', 'owner', 'sha256']).execute()
  const known = new Set(rows.map((r) => objectKey(r.owner, r.sha256)))
  const seen = new Set<string>()
  const orphans: string[] = []
  let objects = 0
  for await (const o of store.list()) {
    objects++
    const original = o.key.includes('.v/') ? o.key.slice(0, o.key.indexOf('.v/')) : o.key
    if (!parseObjectKey(original)) continue
    seen.add(original)
    if (!known.has(original) && !orphans.includes(original)) orphans.push(original)
  }
  const removed: string[] = []
  for (const key of orphans) {
    const parsed = parseObjectKey(key)!
    if (dryRun) {
      removed.push(key)
      continue
    }
    // The key is taken as an upload takes it (file_uploads, under the owner's lock) when no row
    // refers to it and no upload holds it; the delete then runs outside any transaction, and an
    // upload of the same bytes meanwhile waits for the key.
    const token = randomUUID()
    const taken = await db.transaction().execute(async (trx) => {
      await sql`select ${ownerLock(parsed.owner)}`.execute(trx)
      const row = await trx
        .selectFrom('files')
        .select('id')
        .where('owner', '=', parsed.owner)
        .where('sha256', '=', parsed.sha256)
        .executeTakeFirst()
      if (row) return false
      const inserted = await trx
        .insertInto('file_uploads')
        .values({ owner: parsed.owner, sha256: parsed.sha256, size: 0, token, started: new Date(ctx.now()) })
        .onConflict((oc) => oc.columns(['owner', 'sha256']).doNothing())
        .returning('token')
        .executeTakeFirst()
      return inserted !== undefined
    })
    if (!taken) continue
    try {
      await store.delete(key)
      removed.push(key)
    } finally {
      await giveKeyBack(db, parsed, token)
    }
  }
  const missing = rows.filter((r) => !seen.has(objectKey(r.owner, r.sha256)))
  let staleStaging = 0
  /** Removes the entries of `dir` untouched for `graceMs` (except `keep`); counts them. */
  const clean = async (dir: string, graceMs: number, keep?: string) => {
    const entries = await readdir(dir).catch(() => [] as string[])
    for (const name of entries) {
      if (name === keep) continue
      const path = join(dir, name)
      const info = await stat(path).catch(() => undefined)
      if (info && ctx.now() - info.mtimeMs > graceMs) {
        staleStaging++
        if (!dryRun) await rm(path, { force: true, recursive: true })
      }
    }
  }
  // Resumable uploads may pause for up to TUS_EXPIRY_MS: their folder is cleaned on that clock,
  // entry by entry (bytes and record), never as a whole.
  const tusDir = ctx.config.filesTusDir ?? join(store.stagingDir, 'tus')
  await clean(
    store.stagingDir,
    STAGING_GRACE_MS,
    tusDir === join(store.stagingDir, 'tus') ? 'tus' : undefined,
  )
  await clean(tusDir, TUS_EXPIRY_MS)
  if (removed.length > 0 || missing.length > 0 || staleUploads > 0)
    ctx.logger.warn(
      { orphanObjects: removed.length, missingObjects: missing.length, staleUploads, dryRun },
      'files sweep found rows and objects out of step',
    )
  return { objects, orphanObjects: removed, missingObjects: missing, staleStaging, dryRun }
}

/** What `plinth files verify` found: every row's object read back and hashed. */
export interface VerifyReport {
  readonly checked: number
  readonly missing: readonly string[]
  readonly corrupt: readonly string[]
}

/** Reads every stored original back and compares its SHA-256 and size with its row. */
export async function verifyFiles(ctx: ModuleContext): Promise<VerifyReport> {
  const service = createFilesService(ctx)
  const store = await service.storage()
  const rows = await ctx.db.kysely.selectFrom('files').select(['id', 'owner', 'sha256', 'size']).execute()
  const missing: string[] = []
  const corrupt: string[] = []
  for (const r of rows) {
    const stream = await store.read(objectKey(r.owner, r.sha256))
    if (!stream) {
      missing.push(r.id)
      continue
    }
    const hash = createHash('sha256')
    let size = 0
    for await (const chunk of stream) {
      size += (chunk as Buffer).length
      hash.update(chunk as Buffer)
    }
    if (hash.digest('hex') !== r.sha256 || size !== Number(r.size)) corrupt.push(r.id)
  }
  return { checked: rows.length, missing, corrupt }
}

export function sweepJob(ctx: ModuleContext) {
  return defineJob({
    name: SWEEP_JOB,
    description: 'Reconciles file rows and stored objects: removes orphan objects, reports missing ones.',
    payload: Type.Object({ dryRun: Type.Optional(Type.Boolean()) }, { additionalProperties: false }),
    policy: { concurrency: 1, timeout: 3600, retryLimit: 1 },
    async handler({ payload }) {
      const service = createFilesService(ctx)
      // No storage configured (memory:// without PLINTH_FILES_*): nothing to sweep.
      if (
        !(await service.storage().then(
          () => true,
          () => false,
        ))
      )
        return { skipped: 'no storage' }
      const report = await sweepFiles(ctx, { dryRun: payload.dryRun ?? false })
      return {
        objects: report.objects,
        orphanObjects: report.orphanObjects.length,
        missingObjects: report.missingObjects.length,
        staleStaging: report.staleStaging,
      }
    },
  })
}
