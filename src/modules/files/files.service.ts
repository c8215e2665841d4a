import { createHash, randomUUID } from 'node:crypto'
import { open, rm } from 'node:fs/promises'
import { join } from 'node:path'
import type { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { setTimeout as sleep } from 'node:timers/promises'
import { type Kysely, sql } from 'kysely'
import type { ModuleContext } from '../../core/module.ts'
import type { Role } from '../../core/permissions.ts'
import type { PlinthTables } from '../../infra/db/tables.ts'
import { PlinthError } from '../../shared/errors.ts'
import { scanWithClamd } from './clamd.ts'
import { allowedTypes, detectType, type FilePurpose } from './file-types.ts'
import type { FilesTable, FileVisibility } from './files.tables.ts'
import { type FilesMetrics, filesMetrics } from './files-metrics.ts'
import { type ImageFacts, inspectImage, isRasterImage } from './images.ts'
import type { FileStorage } from './storage/file-storage.ts'
import { objectKey, variantKey } from './storage/file-storage.ts'
import { openStorage } from './storage/open-storage.ts'

export type FileRow = Omit<FilesTable, 'created' | 'size'> & { created: Date; size: string | number }

/** A file as the API shows it. */
export interface FileInfo {
  readonly id: string
  readonly owner: string
  readonly name: string
  readonly type: string
  readonly size: number
  readonly sha256: string
  readonly visibility: FileVisibility
  readonly purpose: string
  readonly metadata: Record<string, string>
  readonly width: number | null
  readonly height: number | null
  readonly created: string
  readonly url: string
}

export const toFileInfo = (row: FileRow): FileInfo => ({
  id: row.id,
  owner: row.owner,
  name: row.name,
  type: row.type,
  size: Number(row.size),
  sha256: row.sha256,
  visibility: row.visibility,
  purpose: row.purpose,
  metadata: row.metadata ?? {},
  width: row.width,
  height: row.height,
  created: new Date(row.created).toISOString(),
  url: `/api/v1/files/${row.id}`,
})

/** A file received and checked, waiting in the staging folder to be stored. */
export interface StagedFile {
  readonly path: string
  readonly size: number
  readonly sha256: string
  readonly head: Buffer
  /**
   * The staged bytes' fsync, started as the last byte was written (disk storage only) so that it
   * runs while the file is checked; the storage's own fsync at `put` then finds nothing to flush.
   */
  readonly flushed?: Promise<void>
}

/** Why a staged stream was cut: which limit it passed first. */
export type StageLimit = {
  readonly bytes: number
  readonly code: 'PLINTH_FILE_TOO_LARGE' | 'PLINTH_FILE_REQUEST_TOO_LARGE' | 'PLINTH_FILE_QUOTA_EXCEEDED'
}

export const IMAGE_VARIANTS_JOB = 'files.image-variants'

const HEAD_BYTES = 4100

/**
 * How long a public file's row is kept in memory for downloads (content-addressed, immutable, served
 * with a year's Cache-Control anyway). A delete on this replica forgets it at once; on another
 * replica the object is gone, so the download is a 404 all the same.
 */
export const PUBLIC_ROW_TTL_MS = 5000
const PUBLIC_ROWS_MAX = 10_000
/** How long an upload waits for another upload of the same bytes (by the same owner) to finish. */
export const UPLOAD_WAIT_MS = 120_000
/** A reservation in `file_uploads` older than this was left by a dead process (see the sweep). */
export const UPLOAD_STALE_MS = 60 * 60 * 1000
/**
 * The owner's lock, taken (`select ${ownerLock(owner)}`) by every writer of that owner's files and
 * upload reservations: uploads, deletes, the sweep and erasure serialize on it.
 */
export const ownerLock = (owner: string) => sql`pg_advisory_xact_lock(hashtext(${`plinth.files:${owner}`}))`

/** Gives an object key held in `file_uploads` back, if `token` still holds it. */
export function giveKeyBack(
  db: Kysely<PlinthTables>,
  key: { owner: string; sha256: string },
  token: string,
): Promise<unknown> {
  return db
    .deleteFrom('file_uploads')
    .where('owner', '=', key.owner)
    .where('sha256', '=', key.sha256)
    .where('token', '=', token)
    .execute()
}

export interface UploadInput {
  readonly owner: string
  readonly role: Role
  readonly name: string
  readonly visibility: FileVisibility
  readonly purpose: FilePurpose
  readonly metadata: Record<string, string>
  readonly requestId?: string | undefined
}

export type FilesService = ReturnType<typeof createFilesService>

const services = new WeakMap<ModuleContext, ReturnType<typeof build>>()

/** The files service of a context (one per context: routes, jobs and the CLI share its storage). */
export function createFilesService(ctx: ModuleContext) {
  let service = services.get(ctx)
  if (!service) {
    service = build(ctx)
    services.set(ctx, service)
  }
  return service
}

function build(ctx: ModuleContext) {
  const db = ctx.db.kysely
  const config = ctx.config
  let opened: Promise<FileStorage> | undefined
  const metrics: FilesMetrics = filesMetrics(ctx.metrics, ctx.db)

  /** The storage, opened on first use (a memory:// data dir without PLINTH_FILES_* has none: 503). */
  function storage(): Promise<FileStorage> {
    opened ??= openStorage(config).catch((err) => {
      opened = undefined
      throw err
    })
    return opened
  }

  const quotaOf = (role: Role) => (role === 'admin' ? config.filesQuotaAdmin : config.filesQuota)

  async function usage(owner: string): Promise<{ bytes: number; files: number }> {
    const row = await db
      .selectFrom('files')
      .where('owner', '=', owner)
      .select((eb) => [sql<string>`coalesce(sum(size), 0)`.as('bytes'), eb.fn.countAll<string>().as('files')])
      .executeTakeFirst()
    return { bytes: Number(row?.bytes ?? 0), files: Number(row?.files ?? 0) }
  }

  /**
   * Streams one upload into the staging folder, hashing it on the way, and stops as soon as it
   * passes `limit` (the smallest of the file, request and quota limits left). The bytes never sit
   * whole in memory. On any failure the staged file is removed.
   */
  async function stage(stream: Readable, limit: StageLimit): Promise<StagedFile> {
    const store = await storage()
    const path = join(store.stagingDir, `upload-${randomUUID()}`)
    const hash = createHash('sha256')
    const head: Buffer[] = []
    let headBytes = 0
    let size = 0
    const handle = await open(path, 'wx', 0o600)
    // A client that stops sending (slowloris, a stalled link) is cut after the idle timeout.
    let idle: NodeJS.Timeout | undefined
    const arm = () => {
      clearTimeout(idle)
      idle = setTimeout(
        () =>
          stream.destroy(
            new PlinthError(
              'PLINTH_HTTP_REQUEST_TIMEOUT',
              `No bytes of the upload arrived for ${config.filesUploadIdleTimeout} ms; nothing was stored.`,
            ),
          ),
        config.filesUploadIdleTimeout,
      )
    }
    arm()
    try {
      await pipeline(stream, async (source: AsyncIterable<Buffer>) => {
        for await (const chunk of source) {
          arm()
          size += chunk.length
          if (size > limit.bytes) throw new PlinthError(limit.code)
          hash.update(chunk)
          if (headBytes < HEAD_BYTES) {
            head.push(chunk.subarray(0, HEAD_BYTES - headBytes))
            headBytes += Math.min(chunk.length, HEAD_BYTES - headBytes)
          }
          await handle.write(chunk)
        }
      })
      clearTimeout(idle)
      if ((stream as { truncated?: boolean }).truncated) throw new PlinthError(limit.code)
    } catch (err) {
      await handle.close().catch(() => {})
      clearTimeout(idle)
      await rm(path, { force: true })
      if (err instanceof PlinthError) throw err
      throw new PlinthError('PLINTH_FILE_UPLOAD_INCOMPLETE', undefined, { cause: err })
    }
    const flushed = (store.kind === 'disk' ? handle.sync() : Promise.resolve())
      .finally(() => handle.close())
      .catch(() => {})
    return { path, size, sha256: hash.digest('hex'), head: Buffer.concat(head), flushed }
  }

  /** Checks the staged bytes: not empty, an allowed type (from the bytes), a whole image, no virus. */
  async function inspect(staged: StagedFile, purpose: FilePurpose) {
    if (staged.size === 0) throw new PlinthError('PLINTH_FILE_EMPTY')
    const type = await detectType(staged.head)
    const allowed = allowedTypes(purpose, config.filesAllowedTypes)
    if (!allowed.includes(type))
      throw new PlinthError(
        'PLINTH_FILE_TYPE_NOT_ALLOWED',
        `The content is ${type}, which the purpose "${purpose}" does not accept (accepted: ${allowed.join(', ')}).`,
      )
    let width: number | null = null
    let height: number | null = null
    let thumb: ImageFacts['thumb'] | undefined
    if (isRasterImage(type)) {
      const facts = await inspectImage(staged.path, config.filesImageMaxPixels)
      width = facts.width
      height = facts.height
      thumb = facts.thumb
    }
    if (config.filesClamdSocket) {
      const result = await scanWithClamd(config.filesClamdSocket, staged.path)
      if (!result.clean) {
        ctx.logger.warn({ signature: result.signature }, 'upload refused by the virus scan')
        throw new PlinthError('PLINTH_FILE_INFECTED', `The virus scan found ${result.signature}.`)
      }
    }
    return { type, width, height, thumb }
  }

  /**
   * Stores a staged upload without holding a transaction while the storage writes (a bucket that
   * does not answer would hold it for as long as its timeouts allow, and on the embedded database
   * a transaction holds everyone's). Three steps, each short transaction under the owner's lock:
   * 1. reserve: the same bytes already stored return the existing file (nothing written); the
   *    quota is checked, counting uploads in flight; the object key is taken in `file_uploads`
   *    (an upload of the same bytes already in flight is waited for, then de-duplicates);
   * 2. the bytes (and the thumbnail) are written, outside any transaction;
   * 3. record: the key is given back and the row written (and the variants job enqueued) in one
   *    transaction: clients see the file whole or not at all.
   * An upload that fails after its reservation deletes what it wrote while it still holds the key
   * (nobody else writes that key meanwhile, and no row refers to it), then gives the key back.
   */
  async function store(staged: StagedFile, input: UploadInput): Promise<{ file: FileRow; created: boolean }> {
    try {
      const facts = await inspect(staged, input.purpose)
      await staged.flushed
      const store = await storage()
      const key = objectKey(input.owner, staged.sha256)
      const reserved = await reserveUpload(staged, input)
      if ('existing' in reserved) {
        metrics.upload('deduplicated', staged.size)
        return { file: reserved.existing, created: false }
      }
      const { token } = reserved
      let recorded: FileRow
      try {
        // The thumbnail the check made goes beside the original (the job makes the other variants).
        const thumb = facts.thumb
          ? store.putBuffer(variantKey(input.owner, staged.sha256, facts.thumb.name), facts.thumb.bytes)
          : undefined
        const [stored, thumbStored] = await Promise.allSettled([store.put(key, staged.path), thumb])
        if (stored.status === 'rejected') throw stored.reason
        if (thumbStored.status === 'rejected')
          ctx.logger.warn({ err: thumbStored.reason }, 'upload: the thumbnail was not stored')
        recorded = await db.transaction().execute(async (trx) => {
          await sql`select ${ownerLock(input.owner)}`.execute(trx)
          const released = await trx
            .deleteFrom('file_uploads')
            .where('owner', '=', input.owner)
            .where('sha256', '=', staged.sha256)
            .where('token', '=', token)
            .executeTakeFirst()
          // Lost (the owner was erased meanwhile, or the sweep took it as abandoned): not recorded.
          if (Number(released.numDeletedRows) !== 1) throw new PlinthError('PLINTH_FILE_UPLOAD_INCOMPLETE')
          const file = await trx
            .insertInto('files')
            .values({
              id: randomUUID(),
              owner: input.owner,
              sha256: staged.sha256,
              size: staged.size,
              type: facts.type,
              name: input.name,
              visibility: input.visibility,
              purpose: input.purpose,
              metadata: JSON.stringify(input.metadata) as unknown as Record<string, string>,
              width: facts.width,
              height: facts.height,
            })
            .returningAll()
            .executeTakeFirstOrThrow()
          if (isRasterImage(facts.type))
            await ctx.jobs.enqueue(
              IMAGE_VARIANTS_JOB,
              { fileId: file.id },
              { db: trx as typeof db, overflow: 'accept', requestId: input.requestId },
            )
          return file as FileRow
        })
      } catch (err) {
        await abandonUpload(store, key, input.owner, staged.sha256, token)
        throw err
      }
      metrics.upload('stored', staged.size)
      return { file: recorded, created: true }
    } catch (err) {
      if (err instanceof PlinthError && err.status < 500) metrics.upload('refused')
      throw err
    } finally {
      await staged.flushed
      await rm(staged.path, { force: true })
    }
  }

  /**
   * Step 1 of `store`: the existing file with the same bytes, or the key reserved for this upload
   * (its token). Waits, polling, while another upload of the same bytes holds the key (at most
   * UPLOAD_WAIT_MS); a reservation older than UPLOAD_STALE_MS was abandoned by a dead process and
   * is taken over.
   */
  async function reserveUpload(
    staged: StagedFile,
    input: UploadInput,
  ): Promise<{ existing: FileRow } | { token: string }> {
    const deadline = performance.now() + UPLOAD_WAIT_MS
    let pause = 50
    for (;;) {
      const outcome = await db.transaction().execute(async (trx) => {
        await sql`select ${ownerLock(input.owner)}`.execute(trx)
        // After the lock: it sees every upload of this owner that committed before.
        const existing = await trx
          .selectFrom('files')
          .selectAll()
          .where('owner', '=', input.owner)
          .where('sha256', '=', staged.sha256)
          .executeTakeFirst()
        if (existing) return { existing: existing as FileRow }
        const holder = await trx
          .selectFrom('file_uploads')
          .select('started')
          .where('owner', '=', input.owner)
          .where('sha256', '=', staged.sha256)
          .executeTakeFirst()
        if (holder && ctx.now() - holder.started.getTime() < UPLOAD_STALE_MS) return 'busy' as const
        const used = await trx
          .selectFrom((eb) =>
            eb
              .selectFrom('files')
              .select('size')
              .where('owner', '=', input.owner)
              .unionAll(
                eb
                  .selectFrom('file_uploads')
                  .select('size')
                  .where('owner', '=', input.owner)
                  .where('sha256', '!=', staged.sha256),
              )
              .as('sizes'),
          )
          .select(sql<string>`coalesce(sum(size), 0)`.as('bytes'))
          .executeTakeFirst()
        if (Number(used?.bytes ?? 0) + staged.size > quotaOf(input.role))
          throw new PlinthError('PLINTH_FILE_QUOTA_EXCEEDED')
        const token = randomUUID()
        await holdKey(trx as typeof db, { owner: input.owner, sha256: staged.sha256 }, staged.size, token)
        return { token }
      })
      if (outcome !== 'busy') return outcome
      const left = deadline - performance.now()
      if (left <= 0)
        throw new PlinthError(
          'PLINTH_FILES_STORAGE_UNAVAILABLE',
          'An upload of the same file is still being stored; retry later.',
        )
      await sleep(Math.min(pause, left))
      pause = Math.min(1000, pause * 2)
    }
  }

  /**
   * Holds an object key in `file_uploads` for `token` (in the caller's transaction, under the
   * owner's lock): a holder older than UPLOAD_STALE_MS is taken over.
   */
  async function holdKey(
    trx: typeof db,
    key: { owner: string; sha256: string },
    size: string | number,
    token: string,
  ): Promise<void> {
    const started = new Date(ctx.now())
    await trx
      .insertInto('file_uploads')
      .values({ owner: key.owner, sha256: key.sha256, size, token, started })
      .onConflict((oc) => oc.columns(['owner', 'sha256']).doUpdateSet({ size, token, started }))
      .execute()
  }

  /**
   * An upload that will not be recorded: deletes what it wrote (original and variants) while it
   * still holds the key, then gives the key back. A storage that fails the delete leaves an orphan
   * object for the sweep.
   */
  async function abandonUpload(
    store: FileStorage,
    key: string,
    owner: string,
    sha256: string,
    token: string,
  ): Promise<void> {
    const held = await db
      .selectFrom('file_uploads')
      .select('token')
      .where('owner', '=', owner)
      .where('sha256', '=', sha256)
      .where('token', '=', token)
      .executeTakeFirst()
      .catch(() => undefined)
    if (held) await store.delete(key).catch(() => {})
    await giveKeyBack(db, { owner, sha256 }, token).catch((err: unknown) =>
      ctx.logger.warn({ err }, 'upload: could not give its object key back'),
    )
  }

  const publicRows = new Map<string, { row: FileRow; until: number }>()

  /** `find` for downloads: public rows come from memory for PUBLIC_ROW_TTL_MS (no query per request). */
  async function findForDownload(id: string): Promise<FileRow | undefined> {
    const now = performance.now()
    const hit = publicRows.get(id)
    if (hit && hit.until > now) return hit.row
    const row = await find(id)
    if (row?.visibility === 'public') {
      // Oldest first out: a Map keeps insertion order.
      if (publicRows.size >= PUBLIC_ROWS_MAX) publicRows.delete(publicRows.keys().next().value!)
      publicRows.delete(id)
      publicRows.set(id, { row, until: now + PUBLIC_ROW_TTL_MS })
    } else if (hit) publicRows.delete(id)
    return row
  }

  /** Forgets the cached rows of `owner` (erasure). */
  function forgetOwner(owner: string): void {
    for (const [id, { row }] of publicRows) if (row.owner === owner) publicRows.delete(id)
  }

  async function find(id: string): Promise<FileRow | undefined> {
    if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(id)) return undefined
    return (await db.selectFrom('files').selectAll().where('id', '=', id).executeTakeFirst()) as
      | FileRow
      | undefined
  }

  /**
   * Deletes the row, then its object and variants. The bytes go after the commit, outside any
   * transaction: a bucket that does not answer holds no transaction and no lock (on the embedded
   * database, one session for everyone), and a commit that fails leaves the row with its bytes
   * instead of a row without them. Until they are gone, the key is held in `file_uploads` (taken in
   * the deleting transaction, under the owner's lock), so an upload of the same bytes waits instead
   * of recording a row whose object this delete is about to remove. Bytes the storage fails to
   * delete are left for the sweep (an object without a row); the file is deleted all the same.
   */
  async function remove(file: FileRow, audit?: (trx: typeof db) => Promise<void>): Promise<void> {
    const store = await storage()
    publicRows.delete(file.id)
    const token = randomUUID()
    await db.transaction().execute(async (trx) => {
      await sql`select ${ownerLock(file.owner)}`.execute(trx)
      const gone = await trx.deleteFrom('files').where('id', '=', file.id).executeTakeFirst()
      if (Number(gone.numDeletedRows) === 0) throw new PlinthError('PLINTH_FILE_NOT_FOUND')
      await audit?.(trx as typeof db)
      // While a row holds the key no upload reserves it: what is here is a dead holder's, taken over.
      await holdKey(trx as typeof db, file, file.size, token)
    })
    try {
      await store.delete(objectKey(file.owner, file.sha256))
    } catch (err) {
      ctx.logger.warn(
        { err, fileId: file.id, owner: file.owner },
        'file deleted, but its stored bytes were not: the files sweep removes them',
      )
    } finally {
      await giveKeyBack(db, file, token).catch((err: unknown) =>
        ctx.logger.warn(
          { err },
          'file delete: could not give its object key back (taken over after an hour)',
        ),
      )
    }
  }

  async function list(owner: string, limit: number, cursor?: string) {
    let q = db.selectFrom('files').selectAll().where('owner', '=', owner)
    if (cursor) {
      const [at, id] = Buffer.from(cursor, 'base64url').toString('utf8').split('|')
      const when = new Date(at ?? '')
      if (!id || Number.isNaN(when.getTime())) throw new PlinthError('PLINTH_FILE_CURSOR_INVALID')
      q = q.where((eb) =>
        eb.or([eb('created', '<', when), eb.and([eb('created', '=', when), eb('id', '<', id)])]),
      )
    }
    const rows = (await q
      .orderBy('created', 'desc')
      .orderBy('id', 'desc')
      .limit(limit + 1)
      .execute()) as FileRow[]
    const page = rows.slice(0, limit)
    const last = page.at(-1)
    const nextCursor =
      rows.length > limit && last
        ? Buffer.from(`${new Date(last.created).toISOString()}|${last.id}`).toString('base64url')
        : null
    return { files: page.map(toFileInfo), nextCursor }
  }

  return {
    storage,
    metrics,
    usage,
    quotaOf,
    stage,
    store,
    find,
    findForDownload,
    forgetOwner,
    remove,
    list,
    /** Closes the storage (S3 client, staging folder) if it was opened. */
    async close() {
      const s = opened
      opened = undefined
      if (s) await (await s.catch(() => undefined))?.close()
    },
  }
}

export type { PlinthTables }
