import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto'
import { PlinthError } from '../../shared/errors.ts'

/**
 * The encrypted archive part of a backup (format 1; decision 0014).
 *
 *     header  = "PLNTHBK1" (8) | compression (1: 1 zstd, 2 gzip) | chunk size (4, BE) | reserved (3, zero)
 *     record* = ciphertext length (4, BE) | nonce (12, random) | ciphertext | tag (16)
 *
 * Every record is AES-256-GCM under the backup's own content key, with the additional data
 * `header | "plinth-backup" | backup id | chunk index (8, BE) | final flag (1)`. So a flipped byte
 * anywhere fails that record's tag; a re-ordered, swapped or dropped record fails on its index; a
 * record moved from another backup fails on the id (and the key); a truncated archive lacks the
 * record marked final; bytes after the final record are refused. The header itself is covered by
 * every tag. An empty input still gives one (empty) final record.
 */
export const ARCHIVE_MAGIC = Buffer.from('PLNTHBK1', 'ascii')
export const HEADER_BYTES = 16
const NONCE_BYTES = 12
const TAG_BYTES = 16
const LENGTH_BYTES = 4
const KEY_BYTES = 32
/** Plaintext bytes per record unless told otherwise: 1 MiB. */
export const DEFAULT_CHUNK_SIZE = 1024 * 1024
const MAX_CHUNK_SIZE = 64 * 1024 * 1024

export type Compression = 'zstd' | 'gzip'
const COMPRESSION_CODE: Record<Compression, number> = { zstd: 1, gzip: 2 }

export interface ArchiveHeader {
  readonly compression: Compression
  readonly chunkSize: number
}

function corrupt(reason: string): PlinthError {
  return new PlinthError('PLINTH_BACKUP_CORRUPT', `The backup archive is damaged or was altered: ${reason}.`)
}

function encodeHeader(h: ArchiveHeader): Buffer {
  const b = Buffer.alloc(HEADER_BYTES)
  ARCHIVE_MAGIC.copy(b, 0)
  b.writeUInt8(COMPRESSION_CODE[h.compression], 8)
  b.writeUInt32BE(h.chunkSize, 9)
  return b
}

/** Parses and checks the 16-byte header. */
export function decodeHeader(b: Buffer): ArchiveHeader {
  if (b.length < HEADER_BYTES) throw corrupt('the archive is shorter than its header')
  if (!b.subarray(0, 8).equals(ARCHIVE_MAGIC)) throw corrupt('not a Plinth backup archive (bad magic)')
  const code = b.readUInt8(8)
  const compression = (Object.keys(COMPRESSION_CODE) as Compression[]).find(
    (c) => COMPRESSION_CODE[c] === code,
  )
  if (!compression) throw corrupt(`unknown compression code ${code}`)
  const chunkSize = b.readUInt32BE(9)
  if (chunkSize < 1 || chunkSize > MAX_CHUNK_SIZE) throw corrupt(`chunk size ${chunkSize} is out of range`)
  if (b[13] !== 0 || b[14] !== 0 || b[15] !== 0) throw corrupt('reserved header bytes are set')
  return { compression, chunkSize }
}

function additionalData(header: Buffer, backupId: string, index: number, final: boolean): Buffer {
  const tail = Buffer.alloc(9)
  tail.writeBigUInt64BE(BigInt(index), 0)
  tail.writeUInt8(final ? 1 : 0, 8)
  return Buffer.concat([header, Buffer.from(`plinth-backup${backupId}`, 'utf8'), tail])
}

function assertKey(key: Uint8Array): void {
  if (key.length !== KEY_BYTES) throw new TypeError(`archive: the content key must be ${KEY_BYTES} bytes`)
}

function sealRecord(key: Uint8Array, aad: Buffer, plain: Buffer): Buffer {
  const nonce = randomBytes(NONCE_BYTES)
  const cipher = createCipheriv('aes-256-gcm', key, nonce, { authTagLength: TAG_BYTES })
  cipher.setAAD(aad)
  const body = Buffer.concat([cipher.update(plain), cipher.final()])
  const len = Buffer.alloc(LENGTH_BYTES)
  len.writeUInt32BE(body.length, 0)
  return Buffer.concat([len, nonce, body, cipher.getAuthTag()])
}

export interface EncryptOptions {
  readonly key: Uint8Array
  readonly backupId: string
  readonly compression: Compression
  readonly chunkSize?: number
}

/**
 * Encrypts (already compressed) bytes into the archive format: the header, then one record per
 * `chunkSize` plaintext bytes, the last one flagged final.
 */
export async function* encryptArchive(
  source: AsyncIterable<Uint8Array>,
  options: EncryptOptions,
): AsyncGenerator<Buffer> {
  assertKey(options.key)
  const chunkSize = options.chunkSize ?? DEFAULT_CHUNK_SIZE
  if (!Number.isInteger(chunkSize) || chunkSize < 1 || chunkSize > MAX_CHUNK_SIZE)
    throw new TypeError('archive: chunkSize out of range')
  const header = encodeHeader({ compression: options.compression, chunkSize })
  yield header
  let index = 0
  let pending: Buffer[] = []
  let pendingBytes = 0
  // A full chunk is held back until more data (or the end) says whether it is the final one.
  let held: Buffer | undefined
  for await (const piece of source) {
    let buf = Buffer.from(piece.buffer, piece.byteOffset, piece.byteLength)
    while (buf.length > 0) {
      const take = Math.min(chunkSize - pendingBytes, buf.length)
      pending.push(buf.subarray(0, take))
      pendingBytes += take
      buf = buf.subarray(take)
      if (pendingBytes === chunkSize) {
        if (held)
          yield sealRecord(options.key, additionalData(header, options.backupId, index++, false), held)
        held = Buffer.concat(pending)
        pending = []
        pendingBytes = 0
      }
    }
  }
  if (pendingBytes > 0) {
    if (held) yield sealRecord(options.key, additionalData(header, options.backupId, index++, false), held)
    held = Buffer.concat(pending)
  }
  yield sealRecord(
    options.key,
    additionalData(header, options.backupId, index, true),
    held ?? Buffer.alloc(0),
  )
}

/** Reads exactly what is asked from an async byte source, keeping the rest (copies each byte about once). */
class ByteReader {
  private readonly it: AsyncIterator<Uint8Array>
  private pieces: Buffer[] = []
  private length = 0
  private done = false
  constructor(source: AsyncIterable<Uint8Array>) {
    this.it = source[Symbol.asyncIterator]()
  }
  /** `n` bytes, or fewer when the source ends first. */
  async read(n: number): Promise<Buffer> {
    while (this.length < n && !this.done) {
      const next = await this.it.next()
      if (next.done) this.done = true
      else {
        const b = Buffer.from(next.value.buffer, next.value.byteOffset, next.value.byteLength)
        this.pieces.push(b)
        this.length += b.length
      }
    }
    const all = this.pieces.length === 1 ? this.pieces[0]! : Buffer.concat(this.pieces, this.length)
    const out = all.subarray(0, Math.min(n, all.length))
    const rest = all.subarray(out.length)
    this.pieces = rest.length > 0 ? [rest] : []
    this.length = rest.length
    return out
  }
  async atEnd(): Promise<boolean> {
    return (await this.read(1)).length === 0
  }
}

export interface DecryptOptions {
  readonly key: Uint8Array
  readonly backupId: string
  /** Called with the header once it is read (which compression to undo). */
  readonly onHeader?: (header: ArchiveHeader) => void
}

/**
 * Decrypts and authenticates an archive record by record, yielding the (compressed) plaintext of
 * each. Consumers see a record only after its tag verified; the whole archive is known good only
 * once the generator finished without throwing (callers that must not act on a partial archive,
 * such as restore, run it to the end first).
 * @throws PlinthError `PLINTH_BACKUP_CORRUPT` naming what is wrong (never key material).
 */
export async function* decryptArchive(
  source: AsyncIterable<Uint8Array>,
  options: DecryptOptions,
): AsyncGenerator<Buffer> {
  assertKey(options.key)
  const reader = new ByteReader(source)
  const header = await reader.read(HEADER_BYTES)
  const parsed = decodeHeader(header)
  options.onHeader?.(parsed)
  const maxBody = parsed.chunkSize
  for (let index = 0; ; index++) {
    const len = await reader.read(LENGTH_BYTES)
    if (len.length === 0)
      throw corrupt(`it ends after record ${index - 1} without its final record (truncated)`)
    if (len.length < LENGTH_BYTES) throw corrupt(`record ${index} is cut short (truncated)`)
    const bodyBytes = len.readUInt32BE(0)
    if (bodyBytes > maxBody) throw corrupt(`record ${index} claims ${bodyBytes} bytes, more than a chunk`)
    const rest = await reader.read(NONCE_BYTES + bodyBytes + TAG_BYTES)
    if (rest.length < NONCE_BYTES + bodyBytes + TAG_BYTES)
      throw corrupt(`record ${index} is cut short (truncated)`)
    const nonce = rest.subarray(0, NONCE_BYTES)
    const body = rest.subarray(NONCE_BYTES, NONCE_BYTES + bodyBytes)
    const tag = rest.subarray(NONCE_BYTES + bodyBytes)
    const plain = openRecord(options, header, index, nonce, body, tag)
    if (plain.final) {
      if (!(await reader.atEnd())) throw corrupt('there are bytes after the final record')
      if (plain.data.length > 0) yield plain.data
      return
    }
    yield plain.data
  }
}

function openRecord(
  options: DecryptOptions,
  header: Buffer,
  index: number,
  nonce: Buffer,
  body: Buffer,
  tag: Buffer,
): { data: Buffer; final: boolean } {
  // The final flag is not stored in clear: a record authenticates as exactly one of the two.
  for (const final of [false, true]) {
    try {
      const d = createDecipheriv('aes-256-gcm', options.key, nonce, { authTagLength: TAG_BYTES })
      d.setAAD(additionalData(header, options.backupId, index, final))
      d.setAuthTag(tag)
      return { data: Buffer.concat([d.update(body), d.final()]), final }
    } catch {
      // try the other flag
    }
  }
  throw corrupt(
    `record ${index} does not authenticate (altered, re-ordered, from another backup, or the key differs)`,
  )
}
