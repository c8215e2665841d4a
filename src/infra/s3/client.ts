import { S3Client } from '@aws-sdk/client-s3'

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
  return new S3Client({
    region: connection.region,
    forcePathStyle: connection.forcePathStyle,
    maxAttempts: S3_MAX_ATTEMPTS,
    requestHandler: {
      connectionTimeout: connection.connectTimeoutMs ?? S3_CONNECT_TIMEOUT_MS,
      socketTimeout: connection.socketTimeoutMs ?? S3_SOCKET_TIMEOUT_MS,
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

/** A key prefix ending in `/` (`plinth` → `plinth/`), or `''` for the bucket root. */
export function keyPrefix(prefix: string): string {
  return prefix === '' || prefix.endsWith('/') ? prefix : `${prefix}/`
}

/** Whether an S3 error says the object is not there (NoSuchKey, NotFound, or a 404). */
export function isS3NotFound(err: unknown): boolean {
  const e = err as { name?: string; $metadata?: { httpStatusCode?: number } }
  return e.name === 'NoSuchKey' || e.name === 'NotFound' || e.$metadata?.httpStatusCode === 404
}
