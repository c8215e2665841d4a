import { createHash } from 'node:crypto'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { createGunzip, createGzip, createZstdCompress, createZstdDecompress } from 'node:zlib'
import { PlinthError } from '../../shared/errors.ts'
import { type Compression, decryptArchive, encryptArchive } from './archive-format.ts'
import type { BackupTarget, PendingPart } from './local-target.ts'

export interface WrittenArchive {
  readonly pending: PendingPart
  readonly bytes: number
  readonly dumpBytes: number
  readonly sha256: string
}

export interface ArchiveKey {
  readonly key: Buffer
  readonly backupId: string
}

const compressor = (c: Compression) => (c === 'zstd' ? createZstdCompress() : createGzip())
const decompressor = (c: Compression) =>
  // 256 KiB output chunks: the default 16 KiB made the dump stream thousands of tiny async hops.
  c === 'zstd' ? createZstdDecompress({ chunkSize: 256 * 1024 }) : createGunzip({ chunkSize: 256 * 1024 })

/**
 * Streams `dump` through compression and chunked encryption into a temporary part of the target,
 * then reads the part back and checks its SHA-256 against what was written. The caller publishes
 * the part (after writing nothing else that could fail) or discards it; on any error here it is
 * already discarded.
 */
export async function writeArchive(
  target: BackupTarget,
  name: string,
  dump: AsyncIterable<Uint8Array>,
  options: ArchiveKey & { compression: Compression; chunkSize?: number | undefined; signal?: AbortSignal },
): Promise<WrittenArchive> {
  const pending = await target.create(name)
  const hash = createHash('sha256')
  let bytes = 0
  let dumpBytes = 0
  try {
    await pipeline(
      Readable.from(
        (async function* () {
          for await (const c of dump) {
            dumpBytes += c.length
            yield c
          }
        })(),
      ),
      compressor(options.compression),
      async function* (compressed: AsyncIterable<Buffer>) {
        for await (const c of encryptArchive(compressed, {
          key: options.key,
          backupId: options.backupId,
          compression: options.compression,
          ...(options.chunkSize ? { chunkSize: options.chunkSize } : {}),
        })) {
          hash.update(c)
          bytes += c.length
          yield c
        }
      },
      pending.writable,
      ...(options.signal ? [{ signal: options.signal }] : []),
    )
    const sha256 = hash.digest('hex')
    const check = createHash('sha256')
    let readBytes = 0
    for await (const c of pending.readBack()) {
      check.update(c)
      readBytes += (c as Buffer).length
    }
    if (readBytes !== bytes || check.digest('hex') !== sha256) {
      throw new PlinthError(
        'PLINTH_BACKUP_CORRUPT',
        `The archive ${name} read back from ${target.description} differs from what was written: the disk or target lost data.`,
      )
    }
    return { pending, bytes, dumpBytes, sha256 }
  } catch (err) {
    await pending.discard()
    throw err
  }
}

export interface ArchiveExpectation {
  readonly name: string
  readonly bytes: number
  readonly sha256: string
  readonly dumpBytes: number
  readonly compression: Compression
}

function corrupt(reason: string): PlinthError {
  return new PlinthError('PLINTH_BACKUP_CORRUPT', `The backup archive is damaged or was altered: ${reason}.`)
}

/**
 * The dump inside a published archive, as a byte stream: read from the target, hashed, decrypted
 * record by record, decompressed. Throws `PLINTH_BACKUP_CORRUPT` at the end when the size or SHA-256
 * differ from the manifest's, as soon as a record fails to authenticate, or when decompression
 * fails. Only a run that reached the end without throwing saw a good archive.
 */
export async function* readArchive(
  target: BackupTarget,
  expect: ArchiveExpectation,
  key: ArchiveKey,
  /** Called with the archive bytes read so far (of `expect.bytes`), after each piece. */
  onRead?: (bytesRead: number) => void,
): AsyncGenerator<Buffer> {
  const size = await target.size(expect.name)
  if (size === undefined)
    throw new PlinthError(
      'PLINTH_BACKUP_CORRUPT',
      `The archive part ${expect.name} is missing from the target.`,
    )
  if (size !== expect.bytes) throw corrupt(`it holds ${size} bytes, the manifest says ${expect.bytes}`)
  const hash = createHash('sha256')
  const source = await target.open(expect.name)
  async function* hashed() {
    let read = 0
    for await (const c of source) {
      hash.update(c as Buffer)
      read += (c as Buffer).length
      onRead?.(read)
      yield c as Buffer
    }
  }
  let header: Compression | undefined
  const decrypted = decryptArchive(hashed(), {
    key: key.key,
    backupId: key.backupId,
    onHeader: (h) => {
      header = h.compression
    },
  })
  // The header comes first: the compression it names must be the manifest's.
  const first = await decrypted.next()
  if (header !== expect.compression) throw corrupt('its header names another compression than the manifest')
  const inflate = decompressor(expect.compression)
  let dumpBytes = 0
  const feed = Readable.from(
    (async function* () {
      if (!first.done) yield first.value
      yield* decrypted
    })(),
  )
  feed.on('error', (err) => inflate.destroy(err))
  feed.pipe(inflate)
  try {
    for await (const c of inflate) {
      dumpBytes += (c as Buffer).length
      yield c as Buffer
    }
  } catch (err) {
    if ((err as PlinthError).code === 'PLINTH_BACKUP_CORRUPT') throw err
    throw corrupt(`decompression failed (${(err as Error).message})`)
  }
  if (hash.digest('hex') !== expect.sha256) throw corrupt('its SHA-256 differs from the manifest')
  if (dumpBytes !== expect.dumpBytes) throw corrupt('the dump inside is not the size the manifest says')
}

/** Reads the whole archive, checking everything `readArchive` checks; returns the dump's size. */
export async function checkArchive(
  target: BackupTarget,
  expect: ArchiveExpectation,
  key: ArchiveKey,
): Promise<number> {
  let n = 0
  for await (const c of readArchive(target, expect, key)) n += c.length
  return n
}
