const IDENTIFIER = /^[a-z_][a-z0-9_]*$/

/**
 * A database column whose values are keyring ciphertexts, declared by the module that owns it
 * (`PlinthModule.encryptedColumns`), so that `plinth keys rotate` can re-encrypt it and
 * `plinth keys status` can count it. The writing and reading code must build the AAD with
 * `aad(id)` of this same entry: that is what binds a value to its row.
 */
export interface EncryptedColumn {
  /** The table, e.g. `totp_credentials`. */
  readonly table: string
  /** Its single-column primary key (uuid, text or integer), e.g. `user_id`. */
  readonly idColumn: string
  /** The text column holding the ciphertext, e.g. `secret_ciphertext`. NULL values are skipped. */
  readonly column: string
  /** A text column that records the key id of `column`, kept in step by rotation (optional). */
  readonly keyIdColumn?: string | undefined
  /** The AAD of the value in the row whose id is `id`, e.g. `totp_credentials.secret:<id>`. */
  aad(id: string): string
}

/**
 * Declares an encrypted column. The AAD is `<aadPrefix>:<row id>`, `aadPrefix` defaulting to
 * `<table>.<column>`. The row id must be known when the value is encrypted: generate it in the
 * application (`randomUUID()`) rather than by a database default.
 *
 * @example
 * export const webhookSecret = encryptedColumn({ table: 'webhooks', idColumn: 'id', column: 'secret_ciphertext' })
 * const stored = ctx.keyring.encrypt(secret, webhookSecret.aad(id))
 * const secret = await ctx.keyring.decryptStringAsync(row.secret_ciphertext, webhookSecret.aad(row.id))
 */
export function encryptedColumn(spec: {
  table: string
  idColumn: string
  column: string
  keyIdColumn?: string
  aadPrefix?: string
}): EncryptedColumn {
  for (const name of [spec.table, spec.idColumn, spec.column, spec.keyIdColumn]) {
    if (name !== undefined && !IDENTIFIER.test(name)) {
      throw new TypeError(`encryptedColumn: "${name}" is not a lower-case SQL identifier`)
    }
  }
  const prefix = spec.aadPrefix ?? `${spec.table}.${spec.column}`
  if (prefix === '') throw new TypeError('encryptedColumn: aadPrefix must not be empty')
  return Object.freeze({
    table: spec.table,
    idColumn: spec.idColumn,
    column: spec.column,
    keyIdColumn: spec.keyIdColumn,
    aad: (id: string) => `${prefix}:${id}`,
  })
}

/**
 * Checks a list of declared columns: identifiers are plain, and no column is declared twice.
 * @throws TypeError naming the offending entry.
 */
export function assertEncryptedColumns(columns: readonly EncryptedColumn[]): void {
  const seen = new Set<string>()
  for (const c of columns) {
    for (const name of [c.table, c.idColumn, c.column, c.keyIdColumn]) {
      if (name !== undefined && !IDENTIFIER.test(name)) {
        throw new TypeError(`encrypted column: "${name}" is not a lower-case SQL identifier`)
      }
    }
    const name = `${c.table}.${c.column}`
    if (seen.has(name)) throw new TypeError(`encrypted column ${name} is declared twice`)
    seen.add(name)
  }
}
