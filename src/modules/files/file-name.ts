/**
 * Bidirectional controls (LRE…RLO, LRI…PDI, LRM, RLM, ALM) and invisible characters (zero-width
 * spaces and joiners, BOM, soft hyphen): what makes `invoice‮fdp.exe` read as `invoiceexe.pdf`.
 */
const INVISIBLE = /[\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff]/gu
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is removed
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/gu
/** Characters Windows refuses in names, and quotes (they end a Content-Disposition parameter). */
const RESERVED = /[<>:"|?*\\/]/gu
const MAX_BYTES = 200

/**
 * A name safe to store, show and send back in `Content-Disposition`: the last path segment only
 * (no `../`, no folders, no drive letters), NFC-normalised, without control, bidirectional or
 * invisible characters, without leading dots or spaces, at most 200 UTF-8 bytes (the extension
 * kept). An empty result becomes `file`.
 *
 * @example
 * sanitiseFileName('../../etc/passwd') // → 'passwd'
 * sanitiseFileName('invoice\u202Efdp.exe') // → 'invoicefdp.exe'
 */
export function sanitiseFileName(raw: string | undefined): string {
  let name = (raw ?? '').normalize('NFC')
  name = name.split(/[/\\]/u).pop() ?? ''
  name = name.replace(CONTROL, '').replace(INVISIBLE, '').replace(RESERVED, '_')
  name = name.replace(/^[\s.]+/u, '').replace(/[\s.]+$/u, '')
  if (name === '') return 'file'
  if (Buffer.byteLength(name) > MAX_BYTES) {
    const dot = name.lastIndexOf('.')
    const ext = dot > 0 && name.length - dot <= 16 ? name.slice(dot) : ''
    let stem = name.slice(0, name.length - ext.length)
    while (Buffer.byteLength(stem + ext) > MAX_BYTES) stem = Array.from(stem).slice(0, -1).join('')
    name = stem + ext
  }
  return name
}

/** `Content-Disposition` for a sanitised name: an ASCII fallback and the UTF-8 name (RFC 6266, 8187). */
export function contentDisposition(kind: 'inline' | 'attachment', name: string): string {
  const ascii = name.replace(/[^\x20-\x7e]/gu, '_').replace(/["\\%]/gu, '_')
  const encoded = encodeURIComponent(name).replace(
    /['()*]/gu,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  )
  return `${kind}; filename="${ascii}"; filename*=UTF-8''${encoded}`
}
