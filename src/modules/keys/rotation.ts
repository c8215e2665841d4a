import { setTimeout as sleep } from 'node:timers/promises'
import { type Kysely, sql } from 'kysely'
import type { Logger } from 'pino'
import type { EncryptedColumn } from '../../infra/crypto/encrypted-column.ts'
import type { Keyring } from '../../infra/crypto/keyring.ts'
import type { PlinthTables } from '../../infra/db/tables.ts'
import { countAll } from './key-status.ts'
import { type KeyStore, legacyKeyIds } from './key-store.ts'

export interface RotateOptions {
  /** Rows read and re-encrypted per batch (one short transaction each). Default 500. */
  readonly batchSize?: number
  /**
   * How long after the active key was created replicas may still encrypt with the previous one:
   * their reload interval plus a margin (`plinth keys rotate` uses 2 × `PLINTH_KEYS_REFRESH`). The
   * rotation sweeps again after it, and retires nothing before.
   */
  readonly graceMs: number
  /** Only finish what is unfinished (never create a key). */
  readonly resume?: boolean
  /** Aborting stops between batches; everything done stays done, and a rerun resumes. */
  readonly signal?: AbortSignal
  readonly onProgress?: (event: RotationEvent) => void
  /** Passes that still find values to move after the grace period before giving up. Default 5. */
  readonly maxPassesAfterGrace?: number
}

export type RotationEvent =
  | { type: 'started'; activeId: string; createdId?: string | undefined; retiringIds: readonly string[] }
  | { type: 'batch'; table: string; column: string; moved: number; failed: number; conflicts: number }
  | { type: 'waiting'; ms: number }
  | { type: 'retired'; ids: readonly string[] }

/** A value rotation could not re-encrypt: altered, copied from another row, or under a key nobody has. */
export interface FailedValue {
  readonly table: string
  readonly column: string
  readonly id: string
  readonly keyId: string | null
}

export interface RotationResult {
  readonly activeId: string
  /** The key created by this run; undefined when it resumed an unfinished rotation. */
  readonly createdId?: string | undefined
  readonly moved: number
  readonly failed: readonly FailedValue[]
  /** Keys retired by this run (legacy keys included). */
  readonly retired: readonly string[]
  /** Keys still holding values other than the active one, with their counts: what blocks retirement. */
  readonly remaining: Readonly<Record<string, number>>
  /** False when writes under old keys kept coming after the grace period (see the runbook). */
  readonly converged: boolean
}

interface PassResult {
  moved: number
  conflicts: number
}

/**
 * Rotates the data key: a new key becomes active and the old one `retiring` (or an unfinished
 * rotation is resumed), then every registered column is swept in batches — keyset pagination over
 * rows whose value is not under the active key — re-encrypting each value and writing it back with
 * `UPDATE … WHERE id = $id AND col = $old`, so a concurrent write is never overwritten (the row is
 * simply seen again next pass). Sweeps repeat until one that started after the grace period moves
 * nothing; then every `retiring` key and legacy key that no value names any more is retired, under
 * the key lock and after a recount. Safe while the service runs, and after an interruption a rerun
 * continues where this one stopped.
 */
export async function rotateKeys(
  deps: { db: Kysely<PlinthTables>; store: KeyStore; columns: readonly EncryptedColumn[]; logger: Logger },
  options: RotateOptions,
): Promise<RotationResult> {
  const { db, store, columns } = deps
  const log = deps.logger.child({ component: 'keys' })
  const batchSize = options.batchSize ?? 500
  if (!Number.isInteger(batchSize) || batchSize < 1)
    throw new TypeError('batchSize must be a positive integer')
  const progress = options.onProgress ?? (() => {})

  let activeId: string
  let createdId: string | undefined
  if (options.resume) {
    activeId = (await store.ensureActiveKey()).id
  } else {
    const start = await store.beginRotation()
    activeId = start.activeId
    createdId = start.createdId
  }
  const rows = await store.rows()
  const active = rows.find((r) => r.id === activeId)
  const retiringIds = rows.filter((r) => r.state === 'retiring').map((r) => r.id)
  progress({ type: 'started', activeId, createdId, retiringIds })
  log.info({ activeId, createdId, retiringIds }, createdId ? 'key rotation started' : 'key rotation resumed')

  const ring = await store.sweepKeyring(log)
  if (ring.keyId !== activeId) throw new Error(`the active key changed during rotation (now ${ring.keyId})`)
  const deadline = (active?.created_at.getTime() ?? 0) + options.graceMs
  const failed = new Map<string, FailedValue>()
  let moved = 0
  let converged = false
  let passesAfterGrace = 0
  const maxPasses = options.maxPassesAfterGrace ?? 5

  while (true) {
    const startedAt = await dbNow(db)
    failed.clear()
    const pass: PassResult = { moved: 0, conflicts: 0 }
    for (const column of columns) {
      await sweepColumn(db, column, ring, { batchSize, signal: options.signal, pass, failed, progress, log })
    }
    moved += pass.moved
    if (startedAt >= deadline) {
      if (pass.moved === 0 && pass.conflicts === 0) {
        converged = true
        break
      }
      if (++passesAfterGrace >= maxPasses) break
    }
    const wait = deadline - (await dbNow(db))
    if (wait > 0) {
      progress({ type: 'waiting', ms: wait })
      log.info({ waitMs: wait }, 'waiting for every replica to load the active key before sweeping again')
      await sleep(wait, undefined, { signal: options.signal })
    }
  }

  const legacyIds = legacyKeyIds(store.masters)
  const { retired, remaining } = await store.withLock(async (trx) => {
    const counts = await countAll(trx, columns)
    const current = await store.rows(trx)
    const known = new Map(current.map((r) => [r.id, r.state]))
    const candidates = [
      ...current.filter((r) => r.state === 'retiring').map((r) => r.id),
      ...legacyIds.filter(
        (id) => id !== activeId && known.get(id) !== 'retired' && known.get(id) !== 'retiring',
      ),
    ]
    const free = converged ? candidates.filter((id) => (counts.get(id) ?? 0) === 0) : []
    await store.retire(trx, free)
    const left: Record<string, number> = {}
    for (const [id, n] of counts) if (id !== activeId && id !== '' && n > 0) left[id] = n
    return { retired: free, remaining: left }
  })
  if (retired.length > 0) {
    progress({ type: 'retired', ids: retired })
    log.info({ retired }, 'encryption keys retired')
  }
  log.info({ activeId, moved, failed: failed.size, remaining }, 'key rotation finished')
  return { activeId, createdId, moved, failed: [...failed.values()], retired, remaining, converged }
}

async function dbNow(db: Kysely<PlinthTables>): Promise<number> {
  const { rows } = await sql<{ now: Date }>`select clock_timestamp() as now`.execute(db)
  return new Date(rows[0]!.now).getTime()
}

async function sweepColumn(
  db: Kysely<PlinthTables>,
  column: EncryptedColumn,
  ring: Keyring,
  ctx: {
    batchSize: number
    signal: AbortSignal | undefined
    pass: PassResult
    failed: Map<string, FailedValue>
    progress: (event: RotationEvent) => void
    log: Pick<Logger, 'warn'>
  },
): Promise<void> {
  const id = sql.ref(column.idColumn)
  const col = sql.ref(column.column)
  const table = sql.table(column.table)
  const notActive = `v1.${ring.keyId}.%`
  let last: string | undefined
  while (true) {
    ctx.signal?.throwIfAborted()
    const { rows } = await sql<{ id: string; value: string }>`
      select ${id}::text as id, ${col} as value
        from ${table}
       where ${col} is not null and ${col} not like ${notActive}
         ${last === undefined ? sql`` : sql`and ${id} > ${last}`}
       order by ${id}
       limit ${ctx.batchSize}`.execute(db)
    if (rows.length === 0) return
    last = rows.at(-1)!.id

    let moved = 0
    let conflicts = 0
    let failed = 0
    const updates: { id: string; old: string; value: string }[] = []
    for (const row of rows) {
      const aad = column.aad(row.id)
      try {
        updates.push({ id: row.id, old: row.value, value: ring.encrypt(ring.decrypt(row.value, aad), aad) })
      } catch {
        failed++
        const keyId = ring.keyIdOf(row.value) ?? null
        ctx.failed.set(`${column.table}.${column.column}:${row.id}`, {
          table: column.table,
          column: column.column,
          id: row.id,
          keyId,
        })
        // The id and key id only: never the value, which an operator does not need to see here.
        ctx.log.warn(
          { table: column.table, column: column.column, id: row.id, keyId },
          'a stored value cannot be decrypted; it is left as it is',
        )
      }
    }
    if (updates.length > 0) {
      await db.transaction().execute(async (trx) => {
        for (const u of updates) {
          const result = await sql`
            update ${table}
               set ${col} = ${u.value}
                   ${column.keyIdColumn ? sql`, ${sql.ref(column.keyIdColumn)} = ${ring.keyId}` : sql``}
             where ${id} = ${u.id} and ${col} = ${u.old}`.execute(trx)
          if (Number(result.numAffectedRows ?? 0) === 1) moved++
          else conflicts++
        }
      })
    }
    ctx.pass.moved += moved
    ctx.pass.conflicts += conflicts
    ctx.progress({ type: 'batch', table: column.table, column: column.column, moved, failed, conflicts })
    if (rows.length < ctx.batchSize) return
  }
}
