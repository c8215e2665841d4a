/**
 * Importable datasets: what a module declares so that `plinth import <module> <dataset> <file|dir>`
 * can load JSON, NDJSON or CSV files into one of its tables (see docs/guides/import-and-migrate.md).
 * The imports module (modules/imports) runs the import: streaming, in batches that each commit
 * with their checkpoint, idempotent (an upsert on `key` that rewrites only changed rows).
 */
import type { TObject } from 'typebox'

/** One dataset a module accepts from files. */
export interface ImportableDataset {
  /** The name on the command line (`plinth import <module> <name> …`): lower case, `a-z0-9-`. */
  readonly name: string
  /** The module's own table the rows go into. */
  readonly table: string
  /**
   * The shape of one row once mapped (TypeBox, checked with the same validator as request bodies):
   * CSV values, which are text, are coerced to its types (`"7"` → 7); JSON values are not.
   * Unknown fields are refused when the schema says `additionalProperties: false`.
   */
  readonly schema: TObject
  /** The columns of the upsert key: a unique index or primary key of `table`. */
  readonly key: readonly string[]
  /**
   * Source field → row field, for files whose names differ (`{ 'Serial No': 'serial' }`). Fields
   * not named here keep their name.
   */
  readonly columns?: Readonly<Record<string, string>>
  /**
   * Turns a valid row into the table's columns (default: the row as it is). Throwing rejects the
   * row with the error's message as its reason.
   */
  readonly transform?: (row: Record<string, unknown>) => Record<string, unknown>
  readonly description?: string
}

/** Declares a dataset, checking its shape at the call (a typo in `key` fails at boot, not mid-import). */
export function defineImportable(dataset: ImportableDataset): ImportableDataset {
  if (!/^[a-z][a-z0-9-]{0,62}$/.test(dataset.name))
    throw new Error(`importable dataset name "${dataset.name}" must be lower case a-z0-9-`)
  if (dataset.key.length === 0) throw new Error(`importable dataset "${dataset.name}" needs a key`)
  if (!dataset.transform)
    for (const k of dataset.key)
      if (!(k in dataset.schema.properties))
        throw new Error(`importable dataset "${dataset.name}": key column "${k}" is not in its schema`)
  return Object.freeze(dataset)
}

/** What an import did to one file (or would do, under `--dry-run`). */
export interface ImportFileReport {
  readonly file: string
  readonly format: 'json' | 'ndjson' | 'csv'
  /** `complete`: read to the end; `failed`: stopped at `error` (what committed before stays, resumable). */
  readonly status: 'complete' | 'failed'
  /** Resumed from a checkpoint at this line (0 when read from the start). */
  readonly resumedAtLine: number
  readonly rows: number
  readonly inserted: number
  readonly updated: number
  readonly unchanged: number
  readonly rejected: number
  /** The rejected rows, first `REJECTIONS_REPORTED` of them (every one stays in `import_rejections`). */
  readonly rejections: readonly ImportRejection[]
  readonly error?: string | undefined
}

export interface ImportRejection {
  /** The line the row starts at (1-based; for JSON, the line of its opening brace). */
  readonly line: number
  readonly reason: string
}

export interface ImportReport {
  readonly module: string
  readonly dataset: string
  readonly dryRun: boolean
  readonly files: readonly ImportFileReport[]
  /** Every file complete and no row rejected. */
  readonly ok: boolean
}

/** How many rejections a report lists per file (the counts are always exact). */
export const REJECTIONS_REPORTED = 1000
