import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import sharp from 'sharp'
import {
  allowedTypes,
  detectType,
  PURPOSES,
  RASTER_IMAGES,
  servedInline,
} from '../src/modules/files/file-types.ts'

const text = (s: string) => new TextEncoder().encode(s)

describe('detectType: the type of an upload from its first bytes, never its name', () => {
  it('knows binary formats by their magic numbers', async () => {
    const png = await sharp({ create: { width: 2, height: 2, channels: 3, background: '#000' } })
      .png()
      .toBuffer()
    assert.equal(await detectType(png), 'image/png')
    assert.equal(
      await detectType(Buffer.from('%PDF-1.7\n%\u00e2\u00e3\n1 0 obj\n', 'latin1')),
      'application/pdf',
    )
  })

  it('calls an XML document whose root is <svg> SVG, and other XML XML', async () => {
    assert.equal(
      await detectType(
        text('<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"><circle r="1"/></svg>'),
      ),
      'image/svg+xml',
    )
    assert.equal(
      await detectType(text('<?xml version="1.0"?>\n<feed><title>x</title></feed>')),
      'application/xml',
    )
  })

  it('knows SVG without an XML declaration, after comments and a doctype', async () => {
    assert.equal(await detectType(text('<svg width="1" height="1"></svg>')), 'image/svg+xml')
    assert.equal(
      await detectType(
        text(
          '<!-- drawn by hand -->\n<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "x.dtd" [ <!ENTITY a "b"> ]>\n<svg></svg>',
        ),
      ),
      'image/svg+xml',
    )
    assert.equal(
      await detectType(text('a note that mentions <svg> in passing')),
      'text/html',
      'a tag inside text is HTML to a sniffing browser',
    )
  })

  it('calls a document that starts like HTML HTML, whatever follows', async () => {
    for (const doc of [
      '<!doctype html><p>x',
      '  <!-- c --><html>',
      '<script>alert(1)</script>',
      '<a href="x">y</a>',
    ])
      assert.equal(await detectType(text(doc)), 'text/html', doc)
  })

  it('calls UTF-8 text plain text, unless an HTML tag hides inside it', async () => {
    assert.equal(await detectType(text('name,amount\nada,12\n')), 'text/plain')
    assert.equal(await detectType(text('Grüße aus Köln — 東京')), 'text/plain')
    assert.equal(await detectType(text('harmless line\nthen <img src=x onerror=alert(1)>')), 'text/html')
  })

  it('still calls text cut inside a multi-byte character (at the 4 KiB boundary) text', async () => {
    const full = text(`${'x'.repeat(10)}€`)
    assert.equal(await detectType(full.subarray(0, full.length - 1)), 'text/plain')
  })

  it('calls what is not UTF-8, or holds NUL bytes, octet-stream, and nothing at all empty', async () => {
    assert.equal(
      await detectType(Buffer.from([0xc3, 0x28, 0xa0, 0xa1, 0x41, 0x42, 0x43, 0x44])),
      'application/octet-stream',
    )
    assert.equal(await detectType(Buffer.from('abc\u0000def')), 'application/octet-stream')
    assert.equal(await detectType(new Uint8Array(0)), 'application/x-empty')
  })
})

describe('file purposes and how types are served', () => {
  it('attachments accept the configured types; avatars and images raster images only', () => {
    assert.deepEqual(PURPOSES, ['attachment', 'avatar', 'image'])
    assert.deepEqual(allowedTypes('attachment', ['application/pdf']), ['application/pdf'])
    assert.deepEqual(allowedTypes('avatar', ['application/pdf']), RASTER_IMAGES)
    assert.deepEqual(allowedTypes('image', []), RASTER_IMAGES)
  })

  it('shows raster images, audio, video and plain text inline; everything else (SVG, HTML, PDF) downloads', () => {
    for (const t of ['image/png', 'image/avif', 'audio/mpeg', 'video/webm', 'text/plain'])
      assert.equal(servedInline(t), true, t)
    for (const t of ['image/svg+xml', 'text/html', 'application/pdf', 'application/octet-stream'])
      assert.equal(servedInline(t), false, t)
  })
})
