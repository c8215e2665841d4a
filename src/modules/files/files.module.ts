import fp from 'fastify-plugin'
import type { PlinthModule } from '../../core/module.ts'
import './files.tables.ts'
import { filesPersonalData } from './files.privacy.ts'
import { filesRoutes } from './files.routes.ts'
import { createFilesService } from './files.service.ts'
import createFiles from './migrations/0021-create-files.ts'
import fileUploads from './migrations/0042-file-uploads-in-flight.ts'
import { storageTarget } from './storage/open-storage.ts'
import { sweepJob, sweepSchedules } from './sweep.ts'
import { imageVariantsJob } from './variants.ts'

/**
 * Files and media: uploads streamed to content-addressed storage (local disk or an S3-compatible
 * bucket), downloads with caching and ranges, share links, image variants made by jobs, and the
 * sweep that reconciles rows and objects. Written against the module contract only, like a
 * third-party module (docs/operations/files.md).
 */
export const filesModule: PlinthModule = {
  name: 'files',
  migrations: { '0021-create-files': createFiles, '0042-file-uploads-in-flight': fileUploads },
  personalData: filesPersonalData,
  async plugins(app, ctx) {
    await app.register(
      fp(
        async (root) => {
          root.addHook('onClose', async () => createFilesService(ctx).close())
        },
        { name: 'plinth-files-lifecycle' },
      ),
    )
  },
  routes: filesRoutes,
  jobs: (ctx) => [imageVariantsJob(ctx), sweepJob(ctx)],
  schedules: (ctx) => sweepSchedules(ctx.config),
  // Files on local disk are in the backups; a bucket is not (turn on its versioning: docs/operations/files.md).
  backupPaths: (ctx) => {
    const dir = ctx.config.filesS3Bucket ? undefined : storageTarget(ctx.config)
    return dir
      ? [{ name: 'files', path: dir, description: 'uploaded files (content-addressed objects)' }]
      : []
  },
}
