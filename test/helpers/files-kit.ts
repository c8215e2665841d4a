import assert from 'node:assert/strict'
import { readdirSync } from 'node:fs'
import { join } from 'node:path'
import type { LightMyRequestResponse } from 'fastify'
import sharp from 'sharp'
import { bearer, type Session } from './accounts.ts'
import type { TestPlinth } from './test-plinth.ts'

/** One part of a multipart body: a field, or a file with its bytes. */
export type Part =
  | { readonly name: string; readonly value: string }
  | { readonly name: string; readonly filename: string; readonly content: Buffer; readonly type?: string }

/** A multipart/form-data body written by hand (what a browser's FormData sends). */
export function multipartBody(parts: readonly Part[]): { payload: Buffer; headers: Record<string, string> } {
  const boundary = `----plinth-test-${Math.random().toString(36).slice(2)}`
  const chunks: Buffer[] = []
  for (const p of parts) {
    chunks.push(Buffer.from(`--${boundary}\r\n`))
    if ('value' in p) {
      chunks.push(Buffer.from(`Content-Disposition: form-data; name="${p.name}"\r\n\r\n${p.value}\r\n`))
    } else {
      chunks.push(
        Buffer.from(
          `Content-Disposition: form-data; name="${p.name}"; filename="${p.filename}"\r\nContent-Type: ${p.type ?? 'application/octet-stream'}\r\n\r\n`,
        ),
        p.content,
        Buffer.from('\r\n'),
      )
    }
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`))
  return {
    payload: Buffer.concat(chunks),
    headers: { 'content-type': `multipart/form-data; boundary=${boundary}` },
  }
}

/** Uploads through the API as `who`. */
export function upload(
  plinth: TestPlinth,
  who: Session,
  parts: readonly Part[],
): Promise<LightMyRequestResponse> {
  const body = multipartBody(parts)
  return plinth.app.inject({
    method: 'POST',
    url: '/api/v1/files',
    headers: { ...bearer(who.token), ...body.headers },
    payload: body.payload,
  })
}

/** Uploads one file and returns what the API said about it (asserting 201). */
export async function uploadOne(
  plinth: TestPlinth,
  who: Session,
  filename: string,
  content: Buffer,
  fields: Record<string, string> = {},
): Promise<Record<string, unknown> & { id: string; url: string; sha256: string }> {
  const res = await upload(plinth, who, [
    ...Object.entries(fields).map(([name, value]) => ({ name, value })),
    { name: 'file', filename, content },
  ])
  assert.equal(res.statusCode, 201, res.body)
  return res.json().files[0]
}

/** A PNG of `width`×`height` with a gradient (so that variants differ from it). */
export function png(width: number, height: number): Promise<Buffer> {
  const raw = Buffer.alloc(width * height * 3)
  for (let i = 0; i < raw.length; i++) raw[i] = (i * 7) % 251
  return sharp(raw, { raw: { width, height, channels: 3 } })
    .png()
    .toBuffer()
}

/** A JPEG with EXIF orientation 6 (rotate 90° clockwise to show) and a GPS-ish comment. */
export function jpegWithExif(width: number, height: number): Promise<Buffer> {
  const raw = Buffer.alloc(width * height * 3, 120)
  return sharp(raw, { raw: { width, height, channels: 3 } })
    .jpeg()
    .withMetadata({ orientation: 6 })
    .withExif({ IFD0: { Copyright: 'secret-owner-name', Artist: 'Jane Location' } })
    .toBuffer()
}

/** Every file under `dir`, recursively (relative paths). */
export function filesUnder(dir: string): string[] {
  const out: string[] = []
  const walk = (d: string, prefix: string) => {
    let entries: import('node:fs').Dirent[]
    try {
      entries = readdirSync(d, { withFileTypes: true })
    } catch {
      return
    }
    for (const e of entries) {
      if (e.isDirectory()) walk(join(d, e.name), `${prefix}${e.name}/`)
      else out.push(`${prefix}${e.name}`)
    }
  }
  walk(dir, '')
  return out
}
