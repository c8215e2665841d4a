import multipart from '@fastify/multipart'
import type { FastifyRequest } from 'fastify'
import { Type } from 'typebox'
import { auditCallerOf } from '../../core/audit.ts'
import type { ModuleContext, PlinthApp } from '../../core/module.ts'
import { principalCan } from '../../core/permissions.ts'
import { PlinthError } from '../../shared/errors.ts'
import { sanitiseFileName } from './file-name.ts'
import type { FilePurpose } from './file-types.ts'
import {
  DownloadQuery,
  FileSchema,
  Id,
  LinkBody,
  LinkResult,
  ListQuery,
  UPLOAD_FIELDS,
  UploadResult,
  Usage,
} from './files.schemas.ts'
import { createFilesService, type FileRow, toFileInfo } from './files.service.ts'
import type { FileVisibility } from './files.tables.ts'
import { isRasterImage, MIME_OF, parseImageQuery } from './images.ts'
import { type Access, FILE_CSP, sendStored } from './serve-file.ts'
import { createShareLinks } from './share-links.ts'
import { objectKey } from './storage/file-storage.ts'
import { tusRoutes } from './tus.routes.ts'
import { ensureVariant } from './variants.ts'

const tags = ['files']
const notFound = ['PLINTH_FILE_NOT_FOUND'] as const
const MAX_METADATA_KEYS = 20

function parseMetadata(raw: string): Record<string, string> {
  let value: unknown
  try {
    value = JSON.parse(raw)
  } catch {
    throw new PlinthError(
      'PLINTH_FILE_UPLOAD_INVALID',
      'The metadata field must be a JSON object of strings.',
    )
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw new PlinthError(
      'PLINTH_FILE_UPLOAD_INVALID',
      'The metadata field must be a JSON object of strings.',
    )
  const entries = Object.entries(value)
  if (
    entries.length > MAX_METADATA_KEYS ||
    entries.some(([k, v]) => typeof v !== 'string' || k.length > 100 || v.length > 1000 || /\0/.test(k + v))
  )
    throw new PlinthError(
      'PLINTH_FILE_UPLOAD_INVALID',
      `The metadata field holds at most ${MAX_METADATA_KEYS} string values (keys up to 100, values up to 1000 characters).`,
    )
  return Object.fromEntries(entries) as Record<string, string>
}

/** @fastify/multipart's errors, as Plinth's codes. */
function multipartError(err: unknown): unknown {
  if (err instanceof PlinthError) return err
  const code = (err as { code?: string }).code
  if (code === 'FST_FILES_LIMIT' || code === 'FST_PARTS_LIMIT' || code === 'FST_FIELDS_LIMIT')
    return new PlinthError('PLINTH_FILE_REQUEST_TOO_LARGE', undefined, { cause: err })
  if (code === 'FST_REQ_FILE_TOO_LARGE')
    return new PlinthError('PLINTH_FILE_TOO_LARGE', undefined, { cause: err })
  if (code === 'FST_INVALID_MULTIPART_CONTENT_TYPE' || code === 'FST_PROTO_VIOLATION')
    return new PlinthError('PLINTH_FILE_UPLOAD_INVALID', undefined, { cause: err })
  const message = (err as Error)?.message ?? ''
  if (/unexpected end|aborted|premature|malformed|boundary/i.test(message))
    return new PlinthError('PLINTH_FILE_UPLOAD_INCOMPLETE', undefined, { cause: err })
  return err
}

/** `/files`: upload (multipart, streamed), list, download (and image variants), share links, delete. */
export async function filesRoutes(api: PlinthApp, ctx: ModuleContext): Promise<void> {
  const service = createFilesService(ctx)
  const links = createShareLinks(ctx.config, ctx.logger)
  const config = ctx.config

  /** Admin access to someone else's file is an audit row. */
  const auditAdmin = (request: FastifyRequest, action: string, file: FileRow, db = ctx.db.kysely) =>
    ctx.audit.record(db, {
      action,
      target: { type: 'file', id: file.id },
      outcome: 'success',
      ...auditCallerOf(request),
      details: { owner: file.owner, name: file.name, size: Number(file.size) },
    })

  /** The file, if this caller may change it (owner with files:write, or files:manage); else 404. */
  async function writable(request: FastifyRequest, id: string): Promise<{ file: FileRow; admin: boolean }> {
    const principal = request.principal!
    const file = await service.find(id)
    if (file && file.owner === principal.userId) return { file, admin: false }
    if (file && principalCan(principal, 'files:manage')) return { file, admin: true }
    throw new PlinthError('PLINTH_FILE_NOT_FOUND')
  }

  await tusRoutes(api, ctx)

  await api.register(async (scope) => {
    await scope.register(multipart, {
      limits: {
        // One byte more than allowed, so that our own count (which names the limit) trips first.
        fileSize: config.filesMaxFileSize + 1,
        files: config.filesMaxFilesPerRequest,
        fields: 10,
        fieldSize: 16 * 1024,
        parts: config.filesMaxFilesPerRequest + 10,
        headerPairs: 100,
      },
      throwFileSizeLimit: false,
    })

    scope.post(
      '/files',
      {
        config: {
          permission: 'files:write',
          rateLimit: 'upload',
          errors: [
            'PLINTH_FILE_UPLOAD_INVALID',
            'PLINTH_FILE_UPLOAD_INCOMPLETE',
            'PLINTH_FILE_TOO_LARGE',
            'PLINTH_FILE_REQUEST_TOO_LARGE',
            'PLINTH_FILE_QUOTA_EXCEEDED',
            'PLINTH_FILE_EMPTY',
            'PLINTH_FILE_TYPE_NOT_ALLOWED',
            'PLINTH_FILE_IMAGE_INVALID',
            'PLINTH_FILE_INFECTED',
            'PLINTH_FILE_SCANNER_UNAVAILABLE',
            'PLINTH_HTTP_REQUEST_TIMEOUT',
            'PLINTH_FILES_STORAGE_UNAVAILABLE',
            'PLINTH_HTTP_UNSUPPORTED_MEDIA_TYPE',
          ],
        },
        schema: {
          tags,
          summary:
            'Upload files (multipart/form-data: optional visibility, purpose and metadata fields, then one or more file parts), streamed to storage',
          consumes: ['multipart/form-data'],
          response: { 201: UploadResult },
        },
      },
      async (request, reply) => {
        if (!request.isMultipart())
          throw new PlinthError('PLINTH_FILE_UPLOAD_INVALID', 'Send the files as multipart/form-data.')
        const principal = request.principal!
        let visibility: FileVisibility = 'private'
        let purpose: FilePurpose = 'attachment'
        let metadata: Record<string, string> = {}
        let requestBytes = 0
        const { bytes: used } = await service.usage(principal.userId)
        const quota = service.quotaOf(principal.role)
        const results: { file: FileRow; created: boolean }[] = []
        try {
          for await (const part of request.parts()) {
            if (part.type === 'field') {
              const value = String(part.value)
              if (part.fieldname === 'visibility') {
                if (!(UPLOAD_FIELDS.visibility as readonly string[]).includes(value))
                  throw new PlinthError('PLINTH_FILE_UPLOAD_INVALID', 'visibility is private or public.')
                visibility = value as FileVisibility
              } else if (part.fieldname === 'purpose') {
                if (!(UPLOAD_FIELDS.purpose as readonly string[]).includes(value))
                  throw new PlinthError(
                    'PLINTH_FILE_UPLOAD_INVALID',
                    `purpose is one of ${UPLOAD_FIELDS.purpose.join(', ')}.`,
                  )
                purpose = value as FilePurpose
              } else if (part.fieldname === 'metadata') {
                metadata = parseMetadata(value)
              } else {
                throw new PlinthError(
                  'PLINTH_FILE_UPLOAD_INVALID',
                  `Unknown field ${JSON.stringify(part.fieldname.slice(0, 50))}.`,
                )
              }
              continue
            }
            const stored = results.filter((r) => r.created).reduce((n, r) => n + Number(r.file.size), 0)
            const left = [
              { bytes: config.filesMaxFileSize, code: 'PLINTH_FILE_TOO_LARGE' as const },
              {
                bytes: config.filesMaxRequestSize - requestBytes,
                code: 'PLINTH_FILE_REQUEST_TOO_LARGE' as const,
              },
              { bytes: quota - used - stored, code: 'PLINTH_FILE_QUOTA_EXCEEDED' as const },
            ].reduce((a, b) => (b.bytes < a.bytes ? b : a))
            const staged = await service.stage(part.file, { bytes: Math.max(0, left.bytes), code: left.code })
            requestBytes += staged.size
            results.push(
              await service.store(staged, {
                owner: principal.userId,
                role: principal.role,
                name: sanitiseFileName(part.filename),
                visibility,
                purpose,
                metadata,
                requestId: request.id,
              }),
            )
          }
        } catch (err) {
          // All or nothing: the files this request stored go again.
          for (const r of results.filter((x) => x.created)) await service.remove(r.file).catch(() => {})
          throw multipartError(err)
        }
        if (results.length === 0)
          throw new PlinthError('PLINTH_FILE_UPLOAD_INVALID', 'The request holds no file part.')
        reply.code(201)
        return { files: results.map((r) => ({ ...toFileInfo(r.file), deduplicated: !r.created })) }
      },
    )
  })

  api.get(
    '/files',
    {
      config: { permission: 'files:read', errors: ['PLINTH_FILE_CURSOR_INVALID'] },
      schema: {
        tags,
        summary: 'Your files, newest first, with a cursor',
        querystring: ListQuery,
        response: {
          200: Type.Object({
            files: Type.Array(FileSchema),
            nextCursor: Type.Union([Type.String(), Type.Null()]),
          }),
        },
      },
    },
    async (request) =>
      service.list(request.principal!.userId, request.query.limit ?? 50, request.query.cursor),
  )

  api.get(
    '/files/usage',
    {
      config: { permission: 'files:read' },
      schema: {
        tags,
        summary: 'How many bytes and files you store, and your quota',
        response: { 200: Usage },
      },
    },
    async (request) => {
      const principal = request.principal!
      return { ...(await service.usage(principal.userId)), quota: service.quotaOf(principal.role) }
    },
  )

  api.get(
    '/files/:id',
    {
      config: {
        public: true,
        csp: FILE_CSP,
        errors: [
          ...notFound,
          'PLINTH_FILE_LINK_INVALID',
          'PLINTH_FILE_LINK_EXPIRED',
          'PLINTH_FILE_RANGE_NOT_SATISFIABLE',
          'PLINTH_FILE_TRANSFORM_INVALID',
          'PLINTH_FILE_IMAGE_INVALID',
          'PLINTH_FILES_STORAGE_UNAVAILABLE',
        ],
      },
      schema: {
        tags,
        summary:
          'Download a file (yours, a public one, or through a share link), or an image variant (?variant=thumb|medium or ?w=&h=&fit=&format=); supports Range and conditional requests',
        params: Id,
        querystring: DownloadQuery,
        produces: ['application/octet-stream'],
        response: {
          200: Type.String({ format: 'binary', description: 'The bytes (Content-Type: the file type).' }),
          206: Type.String({
            format: 'binary',
            description: 'The range asked for (Content-Range says which).',
          }),
          304: Type.Null({ description: 'Not modified (If-None-Match or If-Modified-Since).' }),
        },
      },
    },
    async (request, reply) => {
      const { id } = request.params
      const { exp, sig, ...imageQuery } = request.query
      const now = ctx.now()
      const file = await service.findForDownload(id)
      let access: Access | undefined
      if (exp !== undefined || sig !== undefined) {
        // A link is checked before the file is looked up further: a forged one says so whether or not the file exists.
        access = { kind: 'link', expiresAt: links.verify(id, { exp, sig }, now) }
        if (!file) throw new PlinthError('PLINTH_FILE_NOT_FOUND')
      } else if (file?.visibility === 'public') {
        access = { kind: 'public' }
      } else if (file && request.principal && principalCan(request.principal, 'files:read')) {
        if (file.owner === request.principal.userId) access = { kind: 'owner' }
        else if (principalCan(request.principal, 'files:manage')) {
          access = { kind: 'admin' }
          await auditAdmin(request, 'file:read', file)
        }
      }
      if (!file || !access) throw new PlinthError('PLINTH_FILE_NOT_FOUND')
      const store = await service.storage()
      const parsed = parseImageQuery(imageQuery, config.filesImageWidths)
      if (parsed) {
        if (!isRasterImage(file.type))
          throw new PlinthError('PLINTH_FILE_TRANSFORM_INVALID', 'Only raster images have variants.')
        const variant = await ensureVariant(ctx, service, file, parsed)
        const base = file.name.replace(/\.[^.]*$/, '')
        return sendStored(
          request,
          reply,
          store,
          {
            key: variant.key,
            size: variant.size,
            type: MIME_OF[parsed.spec.format],
            name: `${base}-${variant.name}`,
            etag: `"${file.sha256.slice(0, 32)}-${variant.name}"`,
            lastModified: new Date(file.created),
          },
          access,
          now,
        )
      }
      return sendStored(
        request,
        reply,
        store,
        {
          key: objectKey(file.owner, file.sha256),
          size: Number(file.size),
          type: file.type,
          name: file.name,
          etag: `"${file.sha256}"`,
          lastModified: new Date(file.created),
        },
        access,
        now,
      )
    },
  )

  api.post(
    '/files/:id/links',
    {
      config: { permission: 'files:write', errors: [...notFound] },
      schema: {
        tags,
        summary: 'Make a signed, expiring share link to one of your files',
        params: Id,
        body: LinkBody,
        response: { 201: LinkResult },
      },
    },
    async (request, reply) => {
      const { file, admin } = await writable(request, request.params.id)
      if (admin) await auditAdmin(request, 'file:shared', file)
      const seconds = Math.min(request.body.expiresIn, Math.floor(config.filesLinkMaxAge / 1000))
      const expiresAt = new Date(ctx.now() + seconds * 1000)
      reply.code(201)
      return {
        url: `/api/v1/files/${file.id}?${links.sign(file.id, expiresAt)}`,
        expiresAt: expiresAt.toISOString(),
      }
    },
  )

  api.delete(
    '/files/:id',
    {
      config: { permission: 'files:write', errors: [...notFound, 'PLINTH_FILES_STORAGE_UNAVAILABLE'] },
      schema: {
        tags,
        summary: 'Delete a file, its variants and its stored bytes',
        params: Id,
        response: { 204: Type.Null() },
      },
    },
    async (request, reply) => {
      const { file, admin } = await writable(request, request.params.id)
      await service.remove(file, admin ? (trx) => auditAdmin(request, 'file:deleted', file, trx) : undefined)
      reply.code(204)
      return null
    },
  )
}
