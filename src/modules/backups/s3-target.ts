import { randomBytes } from 'node:crypto'
import { PassThrough, type Readable, Writable } from 'node:stream'
import {
  CopyObjectCommand,
  DeleteObjectCommand,
  GetObjectCommand,
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
} from '../../infra/s3/client.ts'
import { PlinthError } from '../../shared/errors.ts'
import type { BackupTarget, PendingPart } from './local-target.ts'

export interface S3TargetOptions extends S3Connection {
  readonly bucket: string
  /** Key prefix, e.g. `plinth/` (a trailing slash is added when missing; empty for the bucket root). */
  readonly prefix: string
}

const TEMP_PREFIX = '.tmp-'
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$/
const PART_SIZE = 8 * 1024 * 1024

/**
 * An S3-compatible bucket as the backup target: parts are uploaded (multipart, `@aws-sdk/lib-storage`)
 * to a temporary key, read back for the checksum, then copied to their name and the temporary key
 * deleted; small files are single PUTs (atomic in S3). Copy is a single CopyObject: parts over 5 GB
 * need a multipart copy (not yet).
 */
export function createS3Target(options: S3TargetOptions): BackupTarget {
  const prefix = keyPrefix(options.prefix)
  const client = createS3Client(options)
  const reader = createS3Reader(options)
  const Bucket = options.bucket
  const where = `s3://${Bucket}/${prefix}`
  // An invalid name is the caller's mistake, refused before any request (a TypeError, as the local
  // target throws): every method computes its key before `call`, which would report it as an outage.
  const key = (name: string) => {
    if (!NAME.test(name) || name.includes('..'))
      throw new TypeError(`backup target: invalid part name ${name}`)
    return `${prefix}${name}`
  }
  const { unavailable, call } = s3Failures('PLINTH_BACKUP_TARGET_UNAVAILABLE', `The backup target ${where}`)
  const get = (name: string) => getKey(key(name))
  async function getKey(Key: string): Promise<Readable | undefined> {
    try {
      return await reader.get({ Bucket, Key })
    } catch (err) {
      if (missing(err)) return undefined
      throw unavailable(err)
    }
  }

  return Object.freeze({
    description: where,
    async create(name: string): Promise<PendingPart> {
      const tempName = `${TEMP_PREFIX}${randomBytes(6).toString('hex')}-${name}`
      key(name)
      const Key = `${prefix}${tempName}`
      const body = new PassThrough()
      const upload = new Upload({
        client,
        params: { Bucket, Key, Body: body },
        partSize: PART_SIZE,
        queueSize: 2,
      })
      const done = upload.done()
      const writable = new Writable({
        write(chunk, _enc, cb) {
          if (body.write(chunk)) cb()
          else body.once('drain', () => cb())
        },
        final(cb) {
          body.end()
          done.then(
            () => cb(),
            (err: unknown) => cb(unavailable(err)),
          )
        },
        destroy(err, cb) {
          void upload.abort().catch(() => {})
          body.destroy()
          cb(err)
        },
      })
      // An upload that fails mid-way (connection cut, endpoint gone) stops reading `body`: without
      // this, a write waiting for 'drain' would wait forever.
      done.catch((err: unknown) => {
        if (!writable.destroyed) writable.destroy(unavailable(err))
      })
      return {
        writable,
        readBack: () => {
          const out = new PassThrough()
          getKey(Key).then(
            (s) => (s ? s.pipe(out) : out.destroy(new Error('the uploaded part is missing'))),
            (err: unknown) => out.destroy(err as Error),
          )
          return out
        },
        async publish() {
          const Published = key(name)
          await call(() =>
            client.send(
              new CopyObjectCommand({
                Bucket,
                Key: Published,
                CopySource: `${Bucket}/${encodeURIComponent(Key).replace(/%2F/g, '/')}`,
              }),
            ),
          )
          await call(() => client.send(new DeleteObjectCommand({ Bucket, Key })))
        },
        async discard() {
          await upload.abort().catch(() => {})
          await client.send(new DeleteObjectCommand({ Bucket, Key })).catch(() => {})
        },
      }
    },
    async open(name: string) {
      const s = await get(name)
      if (!s) throw new PlinthError('PLINTH_BACKUP_NOT_FOUND', `The backup target ${where} holds no ${name}.`)
      return s
    },
    async size(name: string) {
      const Key = key(name)
      try {
        return (await client.send(new HeadObjectCommand({ Bucket, Key }))).ContentLength
      } catch (err) {
        if (missing(err)) return undefined
        throw unavailable(err)
      }
    },
    async readText(name: string) {
      const Key = key(name)
      try {
        const res = await client.send(new GetObjectCommand({ Bucket, Key }))
        return await res.Body!.transformToString('utf8')
      } catch (err) {
        if (missing(err)) return undefined
        throw unavailable(err)
      }
    },
    async writeText(name: string, text: string) {
      const Key = key(name)
      await call(() =>
        client.send(new PutObjectCommand({ Bucket, Key, Body: text, ContentType: 'application/json' })),
      )
    },
    async list() {
      const names: string[] = []
      let ContinuationToken: string | undefined
      do {
        const page = await call(() =>
          client.send(new ListObjectsV2Command({ Bucket, Prefix: prefix, ContinuationToken })),
        )
        for (const o of page.Contents ?? []) {
          const n = (o.Key ?? '').slice(prefix.length)
          if (!n.startsWith(TEMP_PREFIX) && NAME.test(n)) names.push(n)
        }
        ContinuationToken = page.IsTruncated ? page.NextContinuationToken : undefined
      } while (ContinuationToken)
      return names
    },
    async remove(name: string) {
      const Key = key(name)
      await call(() => client.send(new DeleteObjectCommand({ Bucket, Key })))
    },
    // Both clients keep sockets alive between calls: destroyed, they close them.
    async close() {
      client.destroy()
      reader.destroy()
    },
  })
}
