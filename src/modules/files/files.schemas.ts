import { Type } from 'typebox'
import { PURPOSES } from './file-types.ts'
import { IMAGE_FITS, IMAGE_FORMATS } from './images.ts'

const Nullable = <T extends Parameters<typeof Type.Union>[0][number]>(t: T) => Type.Union([t, Type.Null()])

export const Id = Type.Object({ id: Type.String({ format: 'uuid' }) }, { additionalProperties: false })

export const FileSchema = Type.Object({
  id: Type.String({ format: 'uuid' }),
  owner: Type.String({ description: 'The id of the user the file belongs to.' }),
  name: Type.String({ description: 'The sanitised name (no path, control or bidirectional characters).' }),
  type: Type.String({
    description: 'Media type decided from the bytes, not from the name or the Content-Type sent.',
  }),
  size: Type.Integer({ minimum: 0 }),
  sha256: Type.String({ pattern: '^[0-9a-f]{64}$' }),
  visibility: Type.Union([Type.Literal('private'), Type.Literal('public')]),
  purpose: Type.String(),
  metadata: Type.Record(Type.String(), Type.String()),
  width: Nullable(Type.Integer()),
  height: Nullable(Type.Integer()),
  created: Type.String({ format: 'date-time' }),
  url: Type.String({ description: 'Where to download it: GET this path.' }),
})

export const UploadResult = Type.Object({
  files: Type.Array(
    Type.Object({
      ...FileSchema.properties,
      deduplicated: Type.Boolean({ description: 'You had stored these bytes already: this is that file.' }),
    }),
  ),
})

export const ListQuery = Type.Object(
  {
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 200, default: 50 })),
    cursor: Type.Optional(Type.String({ maxLength: 200 })),
  },
  { additionalProperties: false },
)

export const DownloadQuery = Type.Object(
  {
    exp: Type.Optional(Type.String({ maxLength: 20, description: 'Share link: expiry (Unix seconds).' })),
    sig: Type.Optional(Type.String({ maxLength: 100, description: 'Share link: signature.' })),
    variant: Type.Optional(
      Type.String({ maxLength: 20, description: 'A declared image variant: thumb (256) or medium (1024).' }),
    ),
    w: Type.Optional(
      Type.String({ maxLength: 6, description: 'Image width, one of PLINTH_FILES_IMAGE_WIDTHS.' }),
    ),
    h: Type.Optional(
      Type.String({ maxLength: 6, description: 'Image height, one of PLINTH_FILES_IMAGE_WIDTHS.' }),
    ),
    fit: Type.Optional(Type.Union(IMAGE_FITS.map((f) => Type.Literal(f)))),
    format: Type.Optional(Type.Union(IMAGE_FORMATS.map((f) => Type.Literal(f)))),
  },
  { additionalProperties: false },
)

export const LinkBody = Type.Object(
  {
    expiresIn: Type.Integer({
      minimum: 60,
      description: 'Seconds the link stays valid (at most PLINTH_FILES_LINK_MAX_AGE).',
    }),
  },
  { additionalProperties: false },
)

export const LinkResult = Type.Object({
  url: Type.String({
    description: 'Path and query string that download the file (and its variants) until expiresAt.',
  }),
  expiresAt: Type.String({ format: 'date-time' }),
})

export const Usage = Type.Object({
  bytes: Type.Integer({ minimum: 0 }),
  files: Type.Integer({ minimum: 0 }),
  quota: Type.Integer({ minimum: 0 }),
})

export const UPLOAD_FIELDS = {
  visibility: ['private', 'public'],
  purpose: PURPOSES,
} as const
