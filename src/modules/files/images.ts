import type { Readable } from 'node:stream'
import type { Sharp } from 'sharp'
import { PlinthError } from '../../shared/errors.ts'
import { RASTER_IMAGES } from './file-types.ts'

/** sharp (libvips), loaded at the first image rather than at start (decision 0034). */
let sharpModule: Promise<typeof import('sharp')> | undefined
async function loadSharp() {
  sharpModule ??= import('sharp')
  return (await sharpModule).default
}

export const IMAGE_FORMATS = ['webp', 'avif', 'jpeg', 'png'] as const
export type ImageFormat = (typeof IMAGE_FORMATS)[number]
export const IMAGE_FITS = ['cover', 'contain', 'inside'] as const
export type ImageFit = (typeof IMAGE_FITS)[number]

/** A resize asked for: a declared variant or an on-the-fly transform. */
export interface ImageSpec {
  readonly width: number | undefined
  readonly height: number | undefined
  readonly fit: ImageFit
  readonly format: ImageFormat
}

/** The declared variants, made by the `files.image-variants` job after each image upload. */
export const DECLARED_VARIANTS: Readonly<Record<string, { width: number; height: number }>> = Object.freeze({
  thumb: { width: 256, height: 256 },
  medium: { width: 1024, height: 1024 },
})

/** The default format of variants (what the job makes); others are made on first request. */
export const DEFAULT_FORMAT: ImageFormat = 'webp'

export const MIME_OF: Readonly<Record<ImageFormat, string>> = {
  webp: 'image/webp',
  avif: 'image/avif',
  jpeg: 'image/jpeg',
  png: 'image/png',
}

/** The storage name of a variant (`thumb.webp`, `w256-h0-cover.avif`). */
export function variantName(spec: ImageSpec, declared?: string): string {
  return declared
    ? `${declared}.${spec.format}`
    : `w${spec.width ?? 0}-h${spec.height ?? 0}-${spec.fit}.${spec.format}`
}

/** Whether sharp makes variants of this type (SVG never: it is not decoded at all). */
export const isRasterImage = (type: string) => RASTER_IMAGES.includes(type)

/** Formats that keep every frame of an animated source. */
const ANIMATED_OUTPUT = new Set<ImageFormat>(['webp'])

export interface ImageFacts {
  readonly width: number
  readonly height: number
  readonly frames: number
  /** The first declared variant (`thumb`), made by the same decode (see inspectImage). */
  readonly thumb: { readonly name: string; readonly bytes: Buffer }
}

/** The declared variant the upload's own check makes (the others are made by the job). */
export const INSPECTION_VARIANT = 'thumb'

/** The spec of a declared variant in the default format. */
export const declaredSpec = (name: string): ImageSpec => ({
  ...DECLARED_VARIANTS[name]!,
  fit: 'inside',
  format: DEFAULT_FORMAT,
})

/** Orientation from EXIF applied, resized without enlarging, encoded; no metadata kept. */
function encode(image: Sharp, spec: ImageSpec): Sharp {
  const pipeline = image.rotate().resize({
    ...(spec.width ? { width: spec.width } : {}),
    ...(spec.height ? { height: spec.height } : {}),
    fit: spec.fit,
    withoutEnlargement: true,
  })
  return spec.format === 'webp'
    ? pipeline.webp({ quality: 80 })
    : spec.format === 'avif'
      ? pipeline.avif({ quality: 50, effort: 2 })
      : spec.format === 'jpeg'
        ? pipeline.flatten({ background: '#ffffff' }).jpeg({ quality: 82, mozjpeg: true })
        : pipeline.png()
}

/**
 * Decodes the whole image once (every frame, every byte) to refuse what cannot be shown: more
 * pixels per frame than `maxPixels` (decompression bombs: sharp checks the header before decoding
 * anything), truncated or malformed data. That decode is not thrown away: it makes the `thumb`
 * variant (JPEG and WebP decode at a reduced scale, shrink-on-load, yet still read the whole
 * stream), so an upload answers with its thumbnail already stored. Returns the size of one frame,
 * the frame count and the thumbnail.
 */
export async function inspectImage(path: string, maxPixels: number): Promise<ImageFacts> {
  const sharp = await loadSharp()
  try {
    const image = sharp(path, { limitInputPixels: maxPixels, failOn: 'error', animated: true })
    const meta = await image.metadata()
    const frames = meta.pages ?? 1
    const height = meta.pageHeight ?? meta.height ?? 0
    const width = meta.width ?? 0
    if (width * height > maxPixels) throw new Error('pixel limit')
    const spec = declaredSpec(INSPECTION_VARIANT)
    // Every frame is decoded whatever the output keeps (an animated WebP thumbnail keeps them all).
    const bytes = await encode(image, spec).toBuffer()
    return { width, height, frames, thumb: { name: variantName(spec, INSPECTION_VARIANT), bytes } }
  } catch (err) {
    throw new PlinthError(
      'PLINTH_FILE_IMAGE_INVALID',
      `The image could not be decoded, or is larger than ${maxPixels} pixels per frame: ${(err as Error).message.slice(0, 120)}`,
      { cause: err },
    )
  }
}

/**
 * One variant: orientation applied from EXIF then every metadata block dropped (sharp writes none
 * unless asked), resized without enlarging, encoded. Animated sources keep their frames when the
 * output can hold them (WebP); other formats get the first frame. The source is a local path (the
 * disk storage: sharp reads it directly) or a stream (S3), read whole first: sharp decodes a buffer
 * with shrink-on-load, a piped stream less well.
 */
export async function renderVariant(
  source: Readable | string,
  spec: ImageSpec,
  maxPixels: number,
): Promise<Buffer> {
  const animated = ANIMATED_OUTPUT.has(spec.format)
  const input = typeof source === 'string' ? source : Buffer.concat(await source.toArray())
  const sharp = await loadSharp()
  return encode(sharp(input, { limitInputPixels: maxPixels, failOn: 'error', animated }), spec).toBuffer()
}

/** Parses and checks `?variant=` or `?w=&h=&fit=&format=` against the allow-list. */
export function parseImageQuery(
  query: { variant?: string; w?: string; h?: string; fit?: string; format?: string },
  allowedSizes: readonly string[],
): { spec: ImageSpec; declared?: string } | undefined {
  const { variant, w, h, fit, format } = query
  if (
    variant === undefined &&
    w === undefined &&
    h === undefined &&
    fit === undefined &&
    format === undefined
  )
    return undefined
  const refuse = (why: string) => new PlinthError('PLINTH_FILE_TRANSFORM_INVALID', why)
  const fmt = (format ?? DEFAULT_FORMAT) as ImageFormat
  if (!IMAGE_FORMATS.includes(fmt)) throw refuse(`format must be one of ${IMAGE_FORMATS.join(', ')}`)
  if (variant !== undefined) {
    const declared = DECLARED_VARIANTS[variant]
    if (!declared || !Object.hasOwn(DECLARED_VARIANTS, variant))
      throw refuse(`variant must be one of ${Object.keys(DECLARED_VARIANTS).join(', ')}`)
    if (w !== undefined || h !== undefined || fit !== undefined)
      throw refuse('a variant takes no w, h or fit')
    return { spec: { ...declared, fit: 'inside', format: fmt }, declared: variant }
  }
  const size = (v: string | undefined, name: string) => {
    if (v === undefined) return undefined
    if (!allowedSizes.includes(v)) throw refuse(`${name} must be one of ${allowedSizes.join(', ')}`)
    return Number(v)
  }
  const fitValue = (fit ?? 'inside') as ImageFit
  if (!IMAGE_FITS.includes(fitValue)) throw refuse(`fit must be one of ${IMAGE_FITS.join(', ')}`)
  const spec = { width: size(w, 'w'), height: size(h, 'h'), fit: fitValue, format: fmt }
  return { spec }
}
