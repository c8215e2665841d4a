import { join } from 'node:path'
import type { PlinthConfig } from '../../../config/config.schema.ts'
import { PlinthError } from '../../../shared/errors.ts'
import { createDiskStorage } from './disk-storage.ts'
import type { FileStorage } from './file-storage.ts'

/** Where files go for this configuration, or undefined when nowhere is configured (memory:// data dir). */
export function storageTarget(config: PlinthConfig): string | undefined {
  if (config.filesS3Bucket) return `s3://${config.filesS3Bucket}/${config.filesS3Prefix}`
  if (config.filesDir) return config.filesDir
  if (config.dataDir === 'memory://') return undefined
  return join(config.dataDir, 'files')
}

/** Opens the configured storage (S3 when a bucket is set, the disk otherwise). */
export async function openStorage(config: PlinthConfig): Promise<FileStorage> {
  if (config.filesS3Bucket) {
    // Loaded when used: the AWS SDK is ~0.4 s of a start's imports (decision 0034).
    const { createS3Storage } = await import('./s3-storage.ts')
    return createS3Storage({
      bucket: config.filesS3Bucket,
      prefix: config.filesS3Prefix,
      endpoint: config.filesS3Endpoint,
      region: config.filesS3Region,
      accessKeyId: config.filesS3AccessKeyId,
      secretAccessKey: config.filesS3SecretAccessKey,
      forcePathStyle: config.filesS3ForcePathStyle,
      connectTimeoutMs: config.s3ConnectTimeout,
      socketTimeoutMs: config.s3SocketTimeout,
    })
  }
  const dir = storageTarget(config)
  if (!dir)
    throw new PlinthError(
      'PLINTH_FILES_STORAGE_UNAVAILABLE',
      'PLINTH_DATA_DIR is memory:// and neither PLINTH_FILES_DIR nor PLINTH_FILES_S3_BUCKET is set: there is nowhere to store files.',
    )
  return createDiskStorage(dir)
}
