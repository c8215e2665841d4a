import { Readable } from 'node:stream'
import { Server } from '@tus/server'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { Type } from 'typebox'
import type { ModuleContext, PlinthApp } from '../../core/module.ts'
import { type ErrorCode, errorRegistry, PlinthError } from '../../shared/errors.ts'
import { sanitiseFileName } from './file-name.ts'
import { type FilePurpose, PURPOSES } from './file-types.ts'
import { createFilesService, toFileInfo } from './files.service.ts'
import { openTusBackend } from './tus-store.ts'

const OWNER_HEADER = 'x-plinth-upload-owner'
const ROLE_HEADER = 'x-plinth-upload-role'
const PATH = '/api/v1/uploads'
const TUS_HEADERS = [
  'tus-resumable',
  'upload-length',
  'upload-defer-length',
  'upload-offset',
  'upload-metadata',
  'upload-concat',
  'upload-checksum',
  'content-type',
  'content-length',
] as const

/** A tus hook's refusal, as the server turns it into a response: a problem body. */
function refusal(err: unknown): { status_code: number; body: string } {
  const e = err instanceof PlinthError ? err : new PlinthError('PLINTH_INTERNAL', undefined, { cause: err })
  return {
    status_code: e.status,
    body: JSON.stringify({ code: e.code, title: e.title, detail: e.message }),
  }
}

/**
 * Resumable uploads (tus 1.0: creation, creation-with-upload, termination, expiration) under
 * `/api/v1/uploads`. Parts accumulate in `PLINTH_FILES_TUS_DIR` (default `<staging>/tus`), on the
 * local disk whatever the storage; replicas sharing that directory and one Redis (upload locks)
 * resume each other's uploads (tus-store.ts, tus-locker.ts). When the last byte arrives the file goes through the same checks and storage as a multipart
 * upload (type, image, scan, quota, de-duplication) and the response names it
 * (`Plinth-File-Id`, `Plinth-File-Url`). Upload ids start with their owner's id: no one else can
 * continue, read or end an upload.
 */
export async function tusRoutes(api: PlinthApp, ctx: ModuleContext): Promise<void> {
  const service = createFilesService(ctx)
  let tus: Promise<Server> | undefined
  const server = () => {
    tus ??= (async () => {
      const store = await service.storage()
      const backend = await openTusBackend(ctx, store.stagingDir)
      return new Server({
        path: PATH,
        datastore: backend.datastore,
        ...(backend.locker ? { locker: backend.locker } : {}),
        relativeLocation: true,
        maxSize: ctx.config.filesMaxFileSize,
        namingFunction: (req) =>
          `${req.headers.get(OWNER_HEADER)}_${crypto.randomUUID().replaceAll('-', '')}`,
        async onUploadCreate(req, upload) {
          const owner = req.headers.get(OWNER_HEADER)!
          const role = req.headers.get(ROLE_HEADER) as 'admin'
          const purpose = upload.metadata?.purpose ?? 'attachment'
          if (!(PURPOSES as readonly string[]).includes(purpose))
            throw refusal(
              new PlinthError('PLINTH_FILE_UPLOAD_INVALID', `purpose is one of ${PURPOSES.join(', ')}.`),
            )
          const visibility = upload.metadata?.visibility ?? 'private'
          if (visibility !== 'private' && visibility !== 'public')
            throw refusal(new PlinthError('PLINTH_FILE_UPLOAD_INVALID', 'visibility is private or public.'))
          if (upload.size !== undefined) {
            const { bytes } = await service.usage(owner)
            if (bytes + upload.size > service.quotaOf(role))
              throw refusal(new PlinthError('PLINTH_FILE_QUOTA_EXCEEDED'))
          }
          return {}
        },
        async onUploadFinish(req, upload) {
          const owner = req.headers.get(OWNER_HEADER)!
          const role = req.headers.get(ROLE_HEADER) as 'admin'
          try {
            const staged = await service.stage(backend.readFinished(upload.id), {
              bytes: ctx.config.filesMaxFileSize,
              code: 'PLINTH_FILE_TOO_LARGE',
            })
            const { file } = await service.store(staged, {
              owner,
              role,
              name: sanitiseFileName(upload.metadata?.filename ?? upload.metadata?.name ?? undefined),
              visibility: upload.metadata?.visibility === 'public' ? 'public' : 'private',
              purpose: (upload.metadata?.purpose ?? 'attachment') as FilePurpose,
              metadata: {},
              requestId: req.headers.get('x-request-id') ?? undefined,
            })
            const info = toFileInfo(file)
            return { headers: { 'Plinth-File-Id': info.id, 'Plinth-File-Url': info.url } }
          } catch (err) {
            throw refusal(err)
          } finally {
            await backend.discard(upload.id).catch(() => {})
          }
        },
      })
    })().catch((err) => {
      tus = undefined
      throw err
    })
    return tus
  }

  async function handle(request: FastifyRequest, reply: FastifyReply) {
    const principal = request.principal!
    const id = (request.params as { id?: string }).id
    if (id !== undefined && !id.startsWith(`${principal.userId}_`))
      throw new PlinthError('PLINTH_UPLOAD_NOT_FOUND')
    const headers = new Headers()
    // Only the headers tus reads, and only values a Headers object accepts (Latin-1): anything else
    // (a user agent holding U+FFFD…) is not the upload's business.
    for (const name of TUS_HEADERS) {
      const value = request.headers[name]
      if (value === undefined) continue
      try {
        headers.set(name, Array.isArray(value) ? value.join(', ') : value)
      } catch {
        throw new PlinthError(
          'PLINTH_UPLOAD_REFUSED',
          `The ${name} header holds characters HTTP does not allow.`,
        )
      }
    }
    headers.set(OWNER_HEADER, principal.userId)
    headers.set(ROLE_HEADER, principal.role)
    headers.set('x-request-id', request.id)
    // Only tus bytes are handed over: any other body was already read by its content-type parser.
    const hasBody =
      (request.method === 'PATCH' || request.method === 'POST') &&
      String(request.headers['content-type'] ?? '').startsWith('application/offset+octet-stream')
    const web = new Request(new URL(request.url, 'http://plinth.invalid'), {
      method: request.method,
      headers,
      ...(hasBody ? { body: Readable.toWeb(request.raw) as ReadableStream, duplex: 'half' } : {}),
    } as RequestInit)
    const res = await (await server()).handleWeb(web as never)
    const text = res.status >= 400 ? await res.text() : undefined
    if (text !== undefined) {
      let problem: { code?: string; detail?: string } = {}
      try {
        problem = JSON.parse(text)
      } catch {
        problem = { detail: text.trim() }
      }
      // Each status tus answers with becomes a code of its own (with its documented status).
      const byStatus: Record<number, ErrorCode> = {
        404: 'PLINTH_UPLOAD_NOT_FOUND',
        410: 'PLINTH_UPLOAD_NOT_FOUND',
        409: 'PLINTH_UPLOAD_OFFSET_MISMATCH',
        412: 'PLINTH_UPLOAD_VERSION_UNSUPPORTED',
        413: 'PLINTH_FILE_TOO_LARGE',
        415: 'PLINTH_HTTP_UNSUPPORTED_MEDIA_TYPE',
      }
      const code: ErrorCode =
        problem.code && problem.code in errorRegistry
          ? (problem.code as ErrorCode)
          : (byStatus[res.status] ?? (res.status >= 500 ? 'PLINTH_INTERNAL' : 'PLINTH_UPLOAD_REFUSED'))
      throw new PlinthError(code, code === 'PLINTH_INTERNAL' ? undefined : problem.detail || undefined, {
        headers: { 'tus-resumable': '1.0.0' },
      })
    }
    reply.code(res.status)
    res.headers.forEach((value, name) => {
      if (name !== 'content-length' && name !== 'content-type') reply.header(name, value)
    })
    const location = res.headers.get('location')
    if (request.method === 'POST' && res.status === 201 && location)
      return { id: location.slice(location.lastIndexOf('/') + 1), location }
    return reply.send(res.body ? Readable.fromWeb(res.body as never) : null)
  }

  await api.register(async (scope) => {
    // tus bodies are raw bytes the server streams to disk itself: no parser reads them.
    scope.addContentTypeParser('application/offset+octet-stream', (_request, _payload, done) => done(null))
    const config = {
      permission: 'files:write' as const,
      rateLimit: 'upload' as const,
      errors: [
        'PLINTH_UPLOAD_REFUSED',
        'PLINTH_UPLOAD_NOT_FOUND',
        'PLINTH_UPLOAD_OFFSET_MISMATCH',
        'PLINTH_UPLOAD_VERSION_UNSUPPORTED',
        'PLINTH_HTTP_UNSUPPORTED_MEDIA_TYPE',
        'PLINTH_FILE_UPLOAD_INVALID',
        'PLINTH_FILE_TOO_LARGE',
        'PLINTH_FILE_QUOTA_EXCEEDED',
        'PLINTH_FILE_EMPTY',
        'PLINTH_FILE_TYPE_NOT_ALLOWED',
        'PLINTH_FILE_IMAGE_INVALID',
        'PLINTH_FILE_INFECTED',
        'PLINTH_FILE_SCANNER_UNAVAILABLE',
        'PLINTH_FILES_STORAGE_UNAVAILABLE',
      ] as const,
    }
    const tags = ['files']
    const params = Type.Object(
      {
        id: Type.String({
          pattern: '^[0-9a-f-]{36}_[0-9a-f]{32}$',
          description: 'The upload id (the last segment of Location).',
        }),
      },
      { additionalProperties: false },
    )
    const empty = (description: string) => Type.Null({ description })
    scope.post(
      '/uploads',
      {
        config,
        schema: {
          tags,
          summary: 'Create a resumable upload (tus 1.0 creation, creation-with-upload)',
          consumes: ['application/offset+octet-stream'],
          response: {
            201: Type.Object(
              {
                id: Type.String({ description: 'The upload id.' }),
                location: Type.String({
                  description:
                    'Where to PATCH the bytes (also the Location header; Upload-Offset says what a creation-with-upload stored).',
                }),
              },
              { additionalProperties: false },
            ),
            204: empty(
              'The whole file came with the creation and was stored (Plinth-File-Id, Plinth-File-Url).',
            ),
          },
        },
      },
      handle,
    )
    for (const method of ['HEAD', 'PATCH', 'DELETE'] as const) {
      scope.route({
        method,
        url: '/uploads/:id',
        config,
        schema: {
          tags,
          summary: {
            HEAD: 'Where a resumable upload stands (Upload-Offset)',
            PATCH: 'Append bytes to a resumable upload at Upload-Offset; the last ones store the file',
            DELETE: 'Abandon a resumable upload (tus termination)',
          }[method],
          params,
          ...(method === 'PATCH' ? { consumes: ['application/offset+octet-stream'] } : {}),
          response:
            method === 'HEAD'
              ? { 200: empty('Upload-Offset and Upload-Length say where the upload stands.') }
              : {
                  204:
                    method === 'PATCH'
                      ? empty(
                          'Stored up to Upload-Offset; after the last byte, Plinth-File-Id and Plinth-File-Url name the file.',
                        )
                      : empty('The upload and its parts are gone.'),
                },
        },
        handler: handle,
      })
    }
  })
}
