import { type Kysely, sql } from 'kysely'
import type { EncryptedColumn } from '../../infra/crypto/encrypted-column.ts'
import type { PlinthTables } from '../../infra/db/tables.ts'
import { type KeyStore, legacyKeyIds } from './key-store.ts'

/** Counts of one encrypted column's values by the key id they name; `''` counts values in no known format. */
export type KeyCounts = Map<string, number>

/**
 * How many values of `column` name each key id (from the ciphertext text: no decryption, so
 * neither keys nor the master key are needed). One grouped scan of the table.
 */
export async function countByKey(db: Kysely<PlinthTables>, column: EncryptedColumn): Promise<KeyCounts> {
  const col = sql.ref(column.column)
  const { rows } = await sql<{ key_id: string; n: number }>`
    select case when ${col} ~ '^v1\\.[0-9a-f]{16}\\.' then split_part(${col}, '.', 2) else '' end as key_id,
           count(*)::int as n
      from ${sql.table(column.table)}
     where ${col} is not null
     group by 1`.execute(db)
  return new Map(rows.map((r) => [r.key_id, Number(r.n)]))
}

/** `countByKey` summed over every column. */
export async function countAll(
  db: Kysely<PlinthTables>,
  columns: readonly EncryptedColumn[],
): Promise<KeyCounts> {
  const total: KeyCounts = new Map()
  for (const c of columns) {
    for (const [id, n] of await countByKey(db, c)) total.set(id, (total.get(id) ?? 0) + n)
  }
  return total
}

export type KeyStatusState = 'active' | 'retiring' | 'retired' | 'legacy' | 'unknown'

export interface KeyStatus {
  readonly keys: {
    readonly id: string
    /** `legacy`: derived from the master key, readable until a rotation completes; `unknown`: named by values, in no row. */
    readonly state: KeyStatusState
    /** Derived from a master key (values written before data keys existed). */
    readonly legacy: boolean
    readonly createdAt: string | null
    readonly retiredAt: string | null
    readonly values: number
  }[]
  readonly columns: {
    readonly table: string
    readonly column: string
    readonly total: number
    /** Values per key id; `unreadable` counts values in no keyring format. */
    readonly byKey: Record<string, number>
  }[]
  /** A key is still `retiring`, or legacy values remain: `plinth keys rotate` finishes the move. */
  readonly unfinished: boolean
  /** Things an operator should act on, each with what to do. */
  readonly warnings: string[]
}

const STATE_ORDER = { active: 0, retiring: 1, retired: 2 } as const

/** Which key encrypts how many values, per column: what `plinth keys status` prints. */
export async function keyStatus(
  db: Kysely<PlinthTables>,
  store: KeyStore,
  columns: readonly EncryptedColumn[],
): Promise<KeyStatus> {
  // Active first, then retiring, then retired; newest first within each.
  const rows = (await store.rows()).sort((x, y) => STATE_ORDER[x.state] - STATE_ORDER[y.state])
  const legacyIds = legacyKeyIds(store.masters)
  const perColumn = []
  const totals: KeyCounts = new Map()
  for (const c of columns) {
    const counts = await countByKey(db, c)
    const byKey: Record<string, number> = {}
    let total = 0
    for (const [id, n] of [...counts].sort(([a], [b]) => a.localeCompare(b))) {
      byKey[id === '' ? 'unreadable' : id] = n
      total += n
      totals.set(id, (totals.get(id) ?? 0) + n)
    }
    perColumn.push({ table: c.table, column: c.column, total, byKey })
  }

  const keys: KeyStatus['keys'][number][] = rows.map((r) => ({
    id: r.id,
    state: r.state,
    legacy: legacyIds.includes(r.id),
    createdAt: r.created_at.toISOString(),
    retiredAt: r.retired_at?.toISOString() ?? null,
    values: totals.get(r.id) ?? 0,
  }))
  const known = new Set(rows.map((r) => r.id))
  for (const id of legacyIds) {
    if (known.has(id)) continue
    keys.push({
      id,
      state: 'legacy',
      legacy: true,
      createdAt: null,
      retiredAt: null,
      values: totals.get(id) ?? 0,
    })
    known.add(id)
  }
  for (const [id, n] of totals) {
    if (id === '' || known.has(id)) continue
    keys.push({ id, state: 'unknown', legacy: false, createdAt: null, retiredAt: null, values: n })
  }

  const warnings: string[] = []
  for (const k of keys) {
    if (k.state === 'retired' && k.values > 0)
      warnings.push(
        `retired key ${k.id} still has ${k.values} value(s), which replicas cannot read: run \`plinth keys rotate --resume\` to re-encrypt them.`,
      )
    if (k.state === 'unknown')
      warnings.push(
        `${k.values} value(s) name key ${k.id}, which is not in encryption_keys (another master key or database?): they cannot be read.`,
      )
  }
  if ((totals.get('') ?? 0) > 0)
    warnings.push(`${totals.get('')} value(s) are in no keyring format and cannot be read.`)
  if (!rows.some((r) => r.state === 'active'))
    warnings.push('no active data key yet: the first start (or `plinth keys rotate`) creates it.')
  const unfinished =
    keys.some((k) => k.state === 'retiring') || keys.some((k) => k.state === 'legacy' && k.values > 0)
  return { keys, columns: perColumn, unfinished, warnings }
}
