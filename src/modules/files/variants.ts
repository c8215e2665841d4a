import { Type } from 'typebox'
import { defineJob } from '../../core/jobs.ts'
import type { ModuleContext } from '../../core/module.ts'
import { PlinthError } from '../../shared/errors.ts'
import { createFilesService, type FileRow, type FilesService, IMAGE_VARIANTS_JOB } from './files.service.ts'
import { DECLARED_VARIANTS, DEFAULT_FORMAT, type ImageSpec, renderVariant, variantName } from './images.ts'
import { objectKey, variantKey } from './storage/file-storage.ts'

/**
 * The stored variant for `spec`, made now (and stored: the cache) when it is not there yet. Two
 * requests racing for the same variant both make it; each store is atomic, so either wins whole.
 */
export async function ensureVariant(
  ctx: ModuleContext,
  service: FilesService,
  file: FileRow,
  parsed: { spec: ImageSpec; declared?: string },
): Promise<{ key: string; size: number; name: string }> {
  const store = await service.storage()
  const name = variantName(parsed.spec, parsed.declared)
  const key = variantKey(file.owner, file.sha256, name)
  const existing = await store.stat(key)
  // An empty one is what a crash can leave of a variant written without fsync (disk-storage.ts).
  if (existing && existing.size > 0) {
    service.metrics.transform('hit')
    return { key, size: existing.size, name }
  }
  const original = objectKey(file.owner, file.sha256)
  const source = store.localPath
    ? (await store.stat(original)) && store.localPath(original)
    : await store.read(original)
  if (!source) throw new PlinthError('PLINTH_FILE_NOT_FOUND')
  let bytes: Buffer
  try {
    bytes = await renderVariant(source, parsed.spec, ctx.config.filesImageMaxPixels)
  } catch (err) {
    throw new PlinthError('PLINTH_FILE_IMAGE_INVALID', undefined, { cause: err })
  }
  await store.putBuffer(key, bytes)
  service.metrics.transform('miss')
  return { key, size: bytes.length, name }
}

/** Makes the declared variants (thumb, medium) of an uploaded image in the default format. */
export function imageVariantsJob(ctx: ModuleContext) {
  return defineJob({
    name: IMAGE_VARIANTS_JOB,
    description: 'Makes the declared variants (thumb 256, medium 1024, WebP) of an uploaded image.',
    payload: Type.Object({ fileId: Type.String({ format: 'uuid' }) }, { additionalProperties: false }),
    policy: { concurrency: 2, timeout: 120, retryLimit: 2 },
    async handler({ payload, logger }) {
      const service = createFilesService(ctx)
      const file = await service.find(payload.fileId)
      if (!file) return { skipped: 'deleted' }
      try {
        for (const [declared, size] of Object.entries(DECLARED_VARIANTS))
          await ensureVariant(ctx, service, file, {
            spec: { ...size, fit: 'inside', format: DEFAULT_FORMAT },
            declared,
          })
        service.metrics.imageJob('succeeded')
      } catch (err) {
        service.metrics.imageJob('failed')
        logger.warn({ err, fileId: file.id }, 'image variants failed')
        throw err
      }
      return { variants: Object.keys(DECLARED_VARIANTS) }
    },
  })
}
