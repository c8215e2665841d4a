import { fileTypeFromBuffer } from 'file-type'

/** Raster image types sharp decodes, makes variants of and that may be shown inline. */
export const RASTER_IMAGES: readonly string[] = [
  'image/png',
  'image/jpeg',
  'image/gif',
  'image/webp',
  'image/avif',
]

/** What an upload may be for; each purpose has its own allow-list of types. */
export const PURPOSES = ['attachment', 'avatar', 'image'] as const
export type FilePurpose = (typeof PURPOSES)[number]

/** The types a purpose accepts (`attachment`: `PLINTH_FILES_ALLOWED_TYPES`; the others raster images). */
export function allowedTypes(purpose: FilePurpose, attachmentTypes: readonly string[]): readonly string[] {
  return purpose === 'attachment' ? attachmentTypes : RASTER_IMAGES
}

/** Types served inline (displayed by the browser); every other one is a download (`attachment`). */
const INLINE = new Set([...RASTER_IMAGES, 'audio/mpeg', 'audio/ogg', 'video/mp4', 'video/webm', 'text/plain'])

export function servedInline(type: string): boolean {
  return INLINE.has(type)
}

const HTML_START =
  /^\s*(<!--[\s\S]*?-->\s*)*<(!doctype\s+html|html|head|body|script|iframe|meta|title|style|a\s|div|p>|img|svg|table|form|frameset|h1|br|b>)/iu

/**
 * The media type of a file from its first bytes (up to 4 KiB): magic numbers through `file-type`,
 * then text formats it does not know: SVG (an XML document whose root is `<svg`), HTML (a document
 * that starts like one, whatever its name says), plain UTF-8 text; `application/octet-stream`
 * otherwise. The name and the client's Content-Type are never consulted.
 */
export async function detectType(head: Uint8Array): Promise<string> {
  const found = await fileTypeFromBuffer(head)
  if (found) {
    // file-type names XML-based formats by their root; an SVG reported as XML is still SVG.
    if (found.mime === 'application/xml' && /<svg[\s>]/iu.test(Buffer.from(head).toString('utf8')))
      return 'image/svg+xml'
    return found.mime
  }
  if (head.length === 0) return 'application/x-empty'
  const text = Buffer.from(head)
  if (text.includes(0)) return 'application/octet-stream'
  const decoded = new TextDecoder('utf-8', { fatal: false }).decode(text)
  if (
    /<svg[\s>]/iu.test(decoded) &&
    /^\s*(<\?xml[^>]*>\s*)?(<!--[\s\S]*?-->\s*|<!DOCTYPE[^>]*(\[[\s\S]*?\])?\s*>\s*)*<svg[\s>]/iu.test(
      decoded,
    )
  )
    return 'image/svg+xml'
  if (HTML_START.test(decoded)) return 'text/html'
  // Cut in the middle of a multi-byte sequence at the 4 KiB boundary is still text.
  const strict = (() => {
    try {
      new TextDecoder('utf-8', { fatal: true }).decode(text.subarray(0, Math.max(0, text.length - 3)))
      return true
    } catch {
      return false
    }
  })()
  // Any HTML tag anywhere in a "text" file makes it HTML for a sniffing browser: treat it so.
  if (strict && /<(script|html|iframe|body|svg|img|object|embed)[\s>/]/iu.test(decoded)) return 'text/html'
  return strict ? 'text/plain' : 'application/octet-stream'
}
