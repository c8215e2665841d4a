import { PlinthError } from '../../shared/errors.ts'
import type { Compression } from './archive-format.ts'
import type { FilesRoot } from './files-part.ts'

export const BACKUP_ID = /^\d{8}T\d{6}Z-[0-9a-f]{8}$/
export const manifestName = (id: string) => `${id}.manifest.json`
export const archiveName = (id: string) => `${id}.archive`
export const verificationName = (id: string) => `${id}.verification.json`

/** What a backup says about itself; sealed (HMAC under its content key) once written. */
export interface BackupManifest {
  readonly format: 1
  readonly id: string
  /** The engine's kind of database: a PostgreSQL server (`pg_dump -Fc`) or embedded PGlite (`dumpDataDir`). */
  readonly kind: 'postgres' | 'embedded'
  readonly engine: 'pg_dump' | 'pglite-datadir'
  readonly startedAt: string
  readonly finishedAt: string
  readonly plinthVersion: string
  readonly postgresVersion: string
  /** The newest applied migration, or null on a database never migrated. */
  readonly migrationHead: string | null
  /** Rows per table (`schema.table`), counted in the snapshot the dump saw where the engine allows. */
  readonly rowCounts: Readonly<Record<string, number>>
  /** The newest sealed audit row when the backup began. */
  readonly auditHead: { readonly seq: string; readonly hash: string } | null
  readonly compression: Compression
  readonly chunkSize: number
  readonly parts: {
    readonly name: string
    /** Bytes of the engine's dump before compression. */
    readonly dumpBytes: number
    /** Bytes of the archive as stored. */
    readonly bytes: number
    readonly sha256: string
  }[]
  /** The files part (files-part.ts): the directories modules declare, every file listed. */
  readonly files?: {
    readonly name: string
    readonly dumpBytes: number
    readonly bytes: number
    readonly sha256: string
    readonly roots: FilesRoot[]
  }
  /** The content key under `ctx.keyring` (a data key). */
  readonly wrappedKey: string
  /** The content key under a key derived from PLINTH_MASTER_KEY (for a restore after the database is lost). */
  readonly recoveryKey: string
}

export type SealedManifest = BackupManifest & { readonly seal: string }

function corrupt(id: string, reason: string): PlinthError {
  return new PlinthError(
    'PLINTH_BACKUP_CORRUPT',
    `The manifest of backup ${id} is damaged or was altered: ${reason}.`,
  )
}

const isObj = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v)

/**
 * Parses a manifest file and checks its shape. Its seal is checked by whoever can open its
 * content key (`sealHolds`): the shape check only keeps nonsense from reaching that far.
 * @throws PlinthError `PLINTH_BACKUP_CORRUPT`
 */
export function parseManifest(id: string, text: string): SealedManifest {
  let m: unknown
  try {
    m = JSON.parse(text)
  } catch {
    throw corrupt(id, 'it is not valid JSON')
  }
  if (!isObj(m)) throw corrupt(id, 'it is not a JSON object')
  if (m.format !== 1) throw corrupt(id, `unknown format ${String(m.format)}`)
  if (m.id !== id) throw corrupt(id, 'its id differs from its file name')
  if (m.kind !== 'postgres' && m.kind !== 'embedded') throw corrupt(id, 'unknown kind')
  for (const k of [
    'startedAt',
    'finishedAt',
    'plinthVersion',
    'postgresVersion',
    'wrappedKey',
    'recoveryKey',
    'seal',
  ])
    if (typeof m[k] !== 'string') throw corrupt(id, `${k} is missing`)
  if (m.compression !== 'zstd' && m.compression !== 'gzip') throw corrupt(id, 'unknown compression')
  if (!Number.isInteger(m.chunkSize)) throw corrupt(id, 'chunkSize is missing')
  if (
    !isObj(m.rowCounts) ||
    !Object.values(m.rowCounts).every((n) => Number.isInteger(n) && (n as number) >= 0)
  )
    throw corrupt(id, 'rowCounts is malformed')
  const parts = m.parts
  if (
    !Array.isArray(parts) ||
    parts.length !== 1 ||
    !parts.every(
      (p) =>
        isObj(p) &&
        p.name === archiveName(id) &&
        Number.isInteger(p.bytes) &&
        Number.isInteger(p.dumpBytes) &&
        typeof p.sha256 === 'string' &&
        /^[0-9a-f]{64}$/.test(p.sha256),
    )
  )
    throw corrupt(id, 'parts is malformed')
  const f = m.files
  if (
    f !== undefined &&
    !(
      isObj(f) &&
      f.name === `${id}.files.archive` &&
      Number.isInteger(f.bytes) &&
      Number.isInteger(f.dumpBytes) &&
      typeof f.sha256 === 'string' &&
      /^[0-9a-f]{64}$/.test(f.sha256) &&
      Array.isArray(f.roots) &&
      f.roots.every(
        (r) =>
          isObj(r) &&
          typeof r.root === 'string' &&
          Array.isArray(r.files) &&
          r.files.every(
            (x) =>
              isObj(x) &&
              typeof x.path === 'string' &&
              !x.path.split('/').some((seg: string) => seg === '..' || seg === '') &&
              Number.isInteger(x.size) &&
              (x.size as number) >= 0 &&
              typeof x.sha256 === 'string' &&
              /^[0-9a-f]{64}$/.test(x.sha256),
          ),
      )
    )
  )
    throw corrupt(id, 'files is malformed')
  return m as unknown as SealedManifest
}

/** The manifest without its seal: what the seal covers. */
export function unsealed(m: SealedManifest): BackupManifest {
  const { seal: _seal, ...body } = m
  return body
}
