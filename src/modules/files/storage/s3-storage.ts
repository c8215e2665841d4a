import { createReadStream } from 'node:fs'
import { mkdir, mkdtemp, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Readable } from 'node:stream'
import {
  DeleteObjectsCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
} from '@aws-sdk/client-s3'
import { Upload } from '@aws-sdk/lib-storage'
import {
  createS3Client,
  createS3Reader,
  keyPrefix,
  isS3NotFound as missing,
  type S3Connection,
  s3Failures,
} from '../../../infra/s3/client.ts'
import {
  assertKey,
  type ByteRange,
  type FileStorage,
  ownerPrefix,
  type StoredObject,
} from './file-storage.ts'

export interface S3StorageOptions extends S3Connection {
  readonly bucket: string
  readonly prefix: string
  /** Local folder uploads are staged in before they go to the bucket (default: the OS temp folder). */
  readonly stagingDir?: string | undefined
}

/**
 * Files in an S3-compatible bucket. A put is one PutObject (or a multipart upload above 8 MB, which
 * S3 publishes only when completed): an object appears whole or not at all. A bucket that fails to
 * answer (refused, unreachable, silent past `PLINTH_S3_SOCKET_TIMEOUT`, an S3 error) is 503
 * `PLINTH_FILES_STORAGE_UNAVAILABLE`; an invalid key is refused before any request (TypeError).
 */
export async function createS3Storage(options: S3StorageOptions): Promise<FileStorage> {
  const prefix = keyPrefix(options.prefix)
  const client = createS3Client(options)
  const reader = createS3Reader(options)
  const Bucket = options.bucket
  const stagingDir = options.stagingDir ?? (await mkdtemp(join(tmpdir(), 'plinth-files-staging-')))
  await mkdir(stagingDir, { recursive: true, mode: 0o700 })
  const full = (key: string) => `${prefix}${assertKey(key)}`
  const where = `s3://${Bucket}/${prefix}`
  const { unavailable, call } = s3Failures('PLINTH_FILES_STORAGE_UNAVAILABLE', `The file storage ${where}`)

  async function* listAll(under: string): AsyncGenerator<StoredObject> {
    let ContinuationToken: string | undefined
    do {
      const page = await call(() =>
        client.send(new ListObjectsV2Command({ Bucket, Prefix: `${prefix}${under}`, ContinuationToken })),
      )
      for (const o of page.Contents ?? [])
        if (o.Key) yield { key: o.Key.slice(prefix.length), size: Number(o.Size ?? 0) }
      ContinuationToken = page.IsTruncated ? page.NextContinuationToken : undefined
    } while (ContinuationToken)
  }

  async function deleteKeys(keys: string[]): Promise<void> {
    for (let i = 0; i < keys.length; i += 1000) {
      const batch = keys.slice(i, i + 1000)
      if (batch.length === 0) continue
      await call(() =>
        client.send(
          new DeleteObjectsCommand({
            Bucket,
            Delete: { Objects: batch.map((k) => ({ Key: `${prefix}${k}` })), Quiet: true },
          }),
        ),
      )
    }
  }

  return {
    kind: 's3',
    location: where,
    stagingDir,
    async put(key, stagedPath) {
      try {
        const Key = full(key)
        const { size } = await stat(stagedPath)
        const upload = new Upload({
          client,
          params: { Bucket, Key, Body: createReadStream(stagedPath), ContentLength: size },
          partSize: 8 * 1024 * 1024,
          queueSize: 2,
        })
        await call(() => upload.done())
      } finally {
        await rm(stagedPath, { force: true })
      }
    },
    async putBuffer(key, bytes) {
      const Key = full(key)
      await call(() => client.send(new PutObjectCommand({ Bucket, Key, Body: bytes })))
    },
    async read(key, range?: ByteRange): Promise<Readable | undefined> {
      const Key = full(key)
      try {
        return await reader.get({
          Bucket,
          Key,
          ...(range ? { Range: `bytes=${range.start}-${range.end}` } : {}),
        })
      } catch (err) {
        if (missing(err)) return undefined
        throw unavailable(err)
      }
    },
    async stat(key) {
      const Key = full(key)
      try {
        const head = await client.send(new HeadObjectCommand({ Bucket, Key }))
        return { size: Number(head.ContentLength ?? 0) }
      } catch (err) {
        if (missing(err)) return undefined
        throw unavailable(err)
      }
    },
    async delete(key) {
      const keys = [assertKey(key)]
      for await (const o of listAll(`${key}.v/`)) keys.push(o.key)
      await deleteKeys(keys)
    },
    async deletePrefix(owner) {
      const keys: string[] = []
      for await (const o of listAll(ownerPrefix(owner.replace(/\/$/, '')))) keys.push(o.key)
      await deleteKeys(keys)
      return keys.length
    },
    list(under) {
      return listAll(under ? ownerPrefix(under.replace(/\/$/, '')) : '')
    },
    async close() {
      client.destroy()
      reader.destroy()
      await rm(stagingDir, { recursive: true, force: true })
    },
  }
}
