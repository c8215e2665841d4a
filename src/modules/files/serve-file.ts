import type { FastifyReply, FastifyRequest } from 'fastify'
import { PlinthError } from '../../shared/errors.ts'
import { contentDisposition } from './file-name.ts'
import { servedInline } from './file-types.ts'
import type { ByteRange, FileStorage } from './storage/file-storage.ts'

/**
 * What a file response may run in the browser: nothing. `sandbox` gives a document opened from it
 * an opaque origin (no cookies, no scripts, no same-origin API calls) even where a browser would
 * render it; images and media still display.
 */
export const FILE_CSP =
  "sandbox; default-src 'none'; img-src 'self' data:; media-src 'self'; style-src 'unsafe-inline'"

/** How the caller reached the file: it decides Cache-Control. */
export type Access = { kind: 'owner' | 'admin' } | { kind: 'public' } | { kind: 'link'; expiresAt: number }

export function cacheControl(access: Access, now: number): string {
  if (access.kind === 'public') return 'public, max-age=31536000, immutable'
  if (access.kind === 'link') {
    const seconds = Math.max(0, Math.floor(access.expiresAt - now / 1000))
    return `private, max-age=${seconds}`
  }
  return 'private, no-store'
}

/**
 * One `Range: bytes=…` range within `size` bytes: the range, `unsatisfiable` (starts past the end),
 * or undefined (no header, several ranges, or a form not understood: the whole file is sent).
 */
export function parseRange(
  header: string | undefined,
  size: number,
): ByteRange | 'unsatisfiable' | undefined {
  if (!header) return undefined
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim())
  if (!m || (m[1] === '' && m[2] === '')) return undefined
  if (m[1] === '') {
    const suffix = Number(m[2])
    if (suffix === 0 || size === 0) return 'unsatisfiable'
    return { start: Math.max(0, size - suffix), end: size - 1 }
  }
  const start = Number(m[1])
  const end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1)
  if (m[2] !== '' && Number(m[2]) < start) return undefined
  if (start >= size) return 'unsatisfiable'
  return { start, end }
}

function etagMatches(header: string, etag: string): boolean {
  if (header.trim() === '*') return true
  const bare = etag.replace(/^W\//, '')
  return header.split(',').some((t) => t.trim().replace(/^W\//, '') === bare)
}

export interface Servable {
  readonly key: string
  readonly size: number
  readonly type: string
  readonly name: string
  readonly etag: string
  readonly lastModified: Date
}

/**
 * Sends a stored object with ETag, Last-Modified, Range (206/416), conditional 304,
 * Content-Disposition (inline only for types a browser shows harmlessly; SVG, HTML and everything
 * else are downloads), `nosniff`, and Cache-Control by access.
 */
export async function sendStored(
  request: FastifyRequest,
  reply: FastifyReply,
  storage: FileStorage,
  item: Servable,
  access: Access,
  now: number,
) {
  const lastModified = new Date(Math.floor(item.lastModified.getTime() / 1000) * 1000)
  reply
    .header('etag', item.etag)
    .header('last-modified', lastModified.toUTCString())
    .header('cache-control', cacheControl(access, now))
    .header('x-content-type-options', 'nosniff')
    .header('accept-ranges', 'bytes')
  if (access.kind === 'owner' || access.kind === 'admin') reply.header('vary', 'Authorization, Cookie')
  const inm = request.headers['if-none-match']
  const ims = request.headers['if-modified-since']
  const notModified = inm
    ? etagMatches(inm, item.etag)
    : ims !== undefined && !Number.isNaN(Date.parse(ims)) && Date.parse(ims) >= lastModified.getTime()
  if (notModified && (request.method === 'GET' || request.method === 'HEAD')) {
    reply.code(304)
    return reply.send()
  }
  const ifRange = request.headers['if-range']
  const rangeAllowed =
    ifRange === undefined || ifRange === item.etag || ifRange === lastModified.toUTCString()
  const range = rangeAllowed ? parseRange(request.headers.range, item.size) : undefined
  if (range === 'unsatisfiable')
    throw new PlinthError('PLINTH_FILE_RANGE_NOT_SATISFIABLE', undefined, {
      headers: { 'content-range': `bytes */${item.size}` },
    })
  const textual = item.type === 'text/plain'
  reply
    .header('content-type', textual ? 'text/plain; charset=utf-8' : item.type)
    .header(
      'content-disposition',
      contentDisposition(servedInline(item.type) ? 'inline' : 'attachment', item.name),
    )
  if (request.method === 'HEAD') {
    reply.header('content-length', String(item.size))
    return reply.send()
  }
  const stream = await storage.read(item.key, range)
  if (!stream) throw new PlinthError('PLINTH_FILE_NOT_FOUND')
  if (range) {
    reply
      .code(206)
      .header('content-range', `bytes ${range.start}-${range.end}/${item.size}`)
      .header('content-length', String(range.end - range.start + 1))
  } else {
    reply.header('content-length', String(item.size))
  }
  return reply.send(stream)
}
