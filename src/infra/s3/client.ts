import { Readable } from 'node:stream'
import { GetObjectCommand, type GetObjectCommandInput, S3Client } from '@aws-sdk/client-s3'
import { type ErrorCode, PlinthError } from '../../shared/errors.ts'

/**
 * How to reach an S3-compatible server, as the config gives it (`PLINTH_FILES_S3_*`,
 * `PLINTH_BACKUP_S3_*`): the files storage and the backup target both build their client from it.
 */
export interface S3Connection {
  /** Endpoint URL of an S3-compatible server (MinIO, Ceph, R2, s3rver …); unset for AWS S3. */
  readonly endpoint?: string | undefined
  readonly region: string
  /** With `secretAccessKey`; without both, the SDK's default chain (env, profile, instance role). */
  readonly accessKeyId?: string | undefined
  readonly secretAccessKey?: string | undefined
  /** Path-style URLs (`endpoint/bucket/key`), for MinIO, s3rver and most S3-compatible servers. */
  readonly forcePathStyle: boolean
  /** Longest a connection may take to open, in ms (`PLINTH_S3_CONNECT_TIMEOUT`); 0 disables it. */
  readonly connectTimeoutMs?: number | undefined
  /**
   * Longest a request may go without a byte either way, in ms (`PLINTH_S3_SOCKET_TIMEOUT`): an idle
   * limit, so a long transfer that keeps moving is not cut; 0 disables it.
   */
  readonly socketTimeoutMs?: number | undefined
}

/** A request is tried this many times in all (the SDK's standard retry strategy, with backoff). */
export const S3_MAX_ATTEMPTS = 3

/** The defaults of `PLINTH_S3_CONNECT_TIMEOUT` and `PLINTH_S3_SOCKET_TIMEOUT`. */
export const S3_CONNECT_TIMEOUT_MS = 5000
export const S3_SOCKET_TIMEOUT_MS = 30_000

/**
 * The S3 client for `connection`; its owner calls `destroy()` when done. Without the timeouts an
 * endpoint that accepts the connection and never answers would hold the caller forever: a timed-out
 * attempt fails with `TimeoutError` and is retried like any transient failure, so a silent endpoint
 * fails the call after about S3_MAX_ATTEMPTS × the timeout (plus the backoff).
 */
export function createS3Client(connection: S3Connection): S3Client {
  return buildClient(connection, connection.socketTimeoutMs ?? S3_SOCKET_TIMEOUT_MS)
}

function buildClient(connection: S3Connection, socketTimeoutMs: number): S3Client {
  return new S3Client({
    region: connection.region,
    forcePathStyle: connection.forcePathStyle,
    maxAttempts: S3_MAX_ATTEMPTS,
    requestHandler: {
      connectionTimeout: connection.connectTimeoutMs ?? S3_CONNECT_TIMEOUT_MS,
      socketTimeout: socketTimeoutMs,
    },
    ...(connection.endpoint ? { endpoint: connection.endpoint } : {}),
    ...(connection.accessKeyId && connection.secretAccessKey
      ? {
          credentials: {
            accessKeyId: connection.accessKeyId,
            secretAccessKey: connection.secretAccessKey,
          },
        }
      : {}),
  })
}

/** Streamed downloads; see `createS3Reader`. */
export interface S3Reader {
  /** GetObject's body, guarded (see `createS3Reader`); rejects like `send` (NoSuchKey …). */
  get(input: GetObjectCommandInput): Promise<Readable>
  destroy(): void
}

/**
 * Downloads handed to a consumer that reads at its own pace (a restore, a file served to a slow
 * client). The socket idle timeout of `createS3Client` would cut such a download whenever its reader
 * pauses for longer (nobody reads, so the socket is idle), so this client has none. Instead the
 * answer's headers must come within `PLINTH_S3_SOCKET_TIMEOUT`, and so must each chunk while the
 * reader is waiting for one; a pause of the reader's own is never held against the endpoint.
 */
export function createS3Reader(connection: S3Connection): S3Reader {
  const client = buildClient(connection, 0)
  const idleMs = connection.socketTimeoutMs ?? S3_SOCKET_TIMEOUT_MS
  return {
    async get(input) {
      const abort = new AbortController()
      const timer = idleMs > 0 ? setTimeout(() => abort.abort(), idleMs) : undefined
      try {
        const res = await client.send(new GetObjectCommand(input), { abortSignal: abort.signal })
        return stallGuard(res.Body as Readable, idleMs)
      } catch (err) {
        if (abort.signal.aborted) throw timeoutError(`no answer within ${idleMs} ms`, err)
        throw err
      } finally {
        clearTimeout(timer)
      }
    },
    destroy: () => client.destroy(),
  }
}

const timeoutError = (what: string, cause?: unknown) =>
  Object.assign(new Error(`S3: ${what}`, { cause }), { name: 'TimeoutError' })

/**
 * `source` as a stream that fails (TimeoutError) when no data comes for `idleMs` while its reader
 * is waiting for some; while the reader is full (backpressure) no clock runs.
 */
function stallGuard(source: Readable, idleMs: number): Readable {
  if (idleMs <= 0) return source
  let timer: NodeJS.Timeout | undefined
  const stop = () => clearTimeout(timer)
  const wait = () => {
    stop()
    timer = setTimeout(
      () => source.destroy(timeoutError(`no data for ${idleMs} ms while a reader waited`)),
      idleMs,
    )
  }
  const out = new Readable({
    read() {
      wait()
      source.resume()
    },
    destroy(err, callback) {
      stop()
      source.destroy()
      callback(err)
    },
  })
  source.on('data', (chunk: Buffer) => {
    if (out.push(chunk)) wait()
    else {
      stop()
      source.pause()
    }
  })
  source.once('end', () => {
    stop()
    out.push(null)
  })
  source.once('error', (err) => {
    stop()
    out.destroy(err)
  })
  source.pause()
  return out
}

/** A key prefix ending in `/` (`plinth` → `plinth/`), or `''` for the bucket root. */
export function keyPrefix(prefix: string): string {
  return prefix === '' || prefix.endsWith('/') ? prefix : `${prefix}/`
}

/** Whether an S3 error says the object is not there (NoSuchKey, NotFound, or a 404). */
export function isS3NotFound(err: unknown): boolean {
  const e = err as { name?: string; $metadata?: { httpStatusCode?: number } }
  return e.name === 'NoSuchKey' || e.name === 'NotFound' || e.$metadata?.httpStatusCode === 404
}

/**
 * How a caller reports S3 failures: anything that is not already a PlinthError becomes `code` (a
 * 503 "unavailable" code of the caller's) naming `what` (e.g. "The backup target s3://bucket/p/"),
 * with the SDK error's name and the start of its message. `call` wraps one request.
 */
export function s3Failures(code: ErrorCode, what: string) {
  const unavailable = (err: unknown): PlinthError => {
    if (err instanceof PlinthError) return err
    const e = err as { name?: string; message?: string }
    return new PlinthError(
      code,
      `${what} did not answer as expected (${e.name ?? 'Error'}: ${(e.message ?? '').slice(0, 200)}).`,
      { cause: err },
    )
  }
  async function call<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn()
    } catch (err) {
      throw unavailable(err)
    }
  }
  return { unavailable, call }
}
