import { createReadStream } from 'node:fs'
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import type { Readable } from 'node:stream'
import { FileStore } from '@tus/file-store'
import type { DataStore, Locker } from '@tus/utils'
import type { ModuleContext } from '../../core/module.ts'
import { RedisLocker } from './tus-locker.ts'

/** How long an unfinished resumable upload is kept (the tus expiration extension). */
export const TUS_EXPIRY_MS = 24 * 3600 * 1000

/** Where resumable uploads accumulate, and how a finished one is read back and then removed. */
export interface TusBackend {
  readonly datastore: DataStore
  /** Shared locks when Redis is configured (every replica sees them); tus's in-memory ones otherwise. */
  readonly locker: Locker | undefined
  readonly directory: string
  /** The whole of a finished upload. */
  readFinished(id: string): Readable
  /** Removes a finished (or abandoned) upload's bytes and record. */
  discard(id: string): Promise<void>
}

/**
 * @tus/file-store in `PLINTH_FILES_TUS_DIR` (default `<staging>/tus`): the bytes and a JSON record
 * per upload, both in that directory, so replicas sharing the directory share the uploads. With
 * Redis, the upload locks are held there too (tus-locker.ts), and any replica can take an upload
 * over from another. (@tus/s3-store would keep the parts in the bucket instead; the S3-protocol
 * server the tests run, s3rver, answers neither ListParts nor ListMultipartUploads, which it
 * needs, so it is not used untested.)
 */
export async function openTusBackend(ctx: ModuleContext, stagingDir: string): Promise<TusBackend> {
  const directory = ctx.config.filesTusDir ?? join(stagingDir, 'tus')
  await mkdir(directory, { recursive: true, mode: 0o700 })
  const store = new FileStore({ directory, expirationPeriodInMilliseconds: TUS_EXPIRY_MS })
  const redis = ctx.redis?.client
  return {
    datastore: store,
    locker: redis ? new RedisLocker(redis) : undefined,
    directory,
    readFinished: (id) => createReadStream(join(directory, id)),
    discard: (id) => store.remove(id).catch(() => {}),
  }
}
