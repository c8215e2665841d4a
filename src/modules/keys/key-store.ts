import { type Kysely, type Selectable, sql, type Transaction } from 'kysely'
import type { Logger } from 'pino'
import { type Audit, type AuditCaller, callerEntry } from '../../core/audit.ts'
import {
  createDataKey,
  legacyKeys,
  type MasterKeys,
  unwrapDataKey,
  wrapDataKey,
  wrappingKeyId,
  wrappingKeyIdOf,
} from '../../infra/crypto/data-keys.ts'
import { type Keyring, keyringFromKeys } from '../../infra/crypto/keyring.ts'
import type { PlinthTables } from '../../infra/db/tables.ts'
import { PlinthError } from '../../shared/errors.ts'
import type { EncryptionKeysTable } from './keys.tables.ts'
import './keys.tables.ts'

export type EncryptionKeyRow = Selectable<EncryptionKeysTable>
type Db = Kysely<PlinthTables>

/** What `beginRotation` did: created a new active key, or found a rotation to finish. */
export interface RotationStart {
  readonly activeId: string
  /** The key created now; undefined when an unfinished rotation was resumed instead. */
  readonly createdId?: string | undefined
  /** Keys left `retiring` by an earlier rotation (or made so now). */
  readonly retiringIds: readonly string[]
}

/** Who manages the keys (`plinth keys`), and the audit log their changes go to. */
export interface KeyAudit {
  readonly audit: Pick<Audit, 'record'>
  readonly caller: AuditCaller
}

/**
 * The `encryption_keys` table: data keys wrapped by the master key. Changes that must not race
 * (the first key, a rotation, retirement) run in a transaction holding one advisory lock, so
 * replicas starting together and two `plinth keys rotate` at once stay consistent.
 */
export interface KeyStore {
  readonly masters: MasterKeys
  rows(db?: Db): Promise<EncryptionKeyRow[]>
  /** Creates the first data key when there is no active one (replicas may race: one wins). */
  ensureActiveKey(): Promise<{ id: string; created: boolean }>
  /**
   * The keyring a replica works with: the active key first, then the retiring ones, then the
   * legacy (master-derived) keys unless a completed rotation recorded them retired.
   * @throws PlinthError `PLINTH_CONFIG_INVALID` when there is no active key or one cannot be unwrapped.
   */
  loadKeyring(): Promise<Keyring>
  /**
   * The keyring rotation re-encrypts with: the active key first, then every key it can unwrap,
   * retired ones and legacy keys included, so a stray value under a retired key is still rescued.
   */
  sweepKeyring(log?: Pick<Logger, 'warn'>): Promise<Keyring>
  /** Makes a new active key (the old one `retiring`), unless a rotation is unfinished: then resumes it. */
  beginRotation(): Promise<RotationStart>
  /** Runs `fn` in a transaction that holds the key-management lock. */
  withLock<T>(fn: (trx: Transaction<PlinthTables>) => Promise<T>): Promise<T>
  /** Records keys retired (legacy keys get a row, wrapped like the others). */
  retire(trx: Transaction<PlinthTables>, ids: readonly string[]): Promise<void>
  /**
   * Re-wraps every data key under the current master key (those wrapped by
   * `PLINTH_MASTER_KEY_PREVIOUS`), and keeps the previous master's legacy key as a `retiring` row
   * when `legacyInUse` says values still use it. Returns the ids re-wrapped.
   */
  rewrap(legacyInUse: (id: string) => Promise<boolean>): Promise<{ rewrapped: string[]; kept: string[] }>
}

/**
 * With `options.audit`, a rotation's new key (`key:rotated`), each retired key (`key:retired`) and
 * each re-wrapped key (`key:rewrapped`) is recorded in the transaction that changes it. The first
 * key a starting replica creates is not: no one asked for it.
 */
export function createKeyStore(db: Db, masters: MasterKeys, options: { audit?: KeyAudit } = {}): KeyStore {
  const legacy = legacyKeys(masters)

  async function record(
    trx: Transaction<PlinthTables>,
    action: string,
    id: string,
    details: Record<string, unknown>,
  ): Promise<void> {
    const a = options.audit
    if (a)
      await a.audit.record(trx, callerEntry(a.caller, action, { type: 'encryption-key', id }, { details }))
  }

  function withLock<T>(fn: (trx: Transaction<PlinthTables>) => Promise<T>): Promise<T> {
    return db.transaction().execute(async (trx) => {
      await sql`select pg_advisory_xact_lock(hashtext('plinth:encryption_keys'))`.execute(trx)
      return fn(trx)
    })
  }

  const rows = (on: Db = db) =>
    on.selectFrom('encryption_keys').selectAll().orderBy('created_at', 'desc').execute()

  async function insertNewActive(trx: Transaction<PlinthTables>): Promise<string> {
    const { id, key } = createDataKey()
    await trx
      .insertInto('encryption_keys')
      .values({ id, wrapped_key: wrapDataKey(masters.current, id, key), state: 'active' })
      .execute()
    return id
  }

  return {
    masters,
    rows,

    async ensureActiveKey() {
      const found = await db
        .selectFrom('encryption_keys')
        .select('id')
        .where('state', '=', 'active')
        .executeTakeFirst()
      if (found) return { id: found.id, created: false }
      return withLock(async (trx) => {
        const again = await trx
          .selectFrom('encryption_keys')
          .select('id')
          .where('state', '=', 'active')
          .executeTakeFirst()
        if (again) return { id: again.id, created: false }
        return { id: await insertNewActive(trx), created: true }
      })
    },

    async loadKeyring() {
      const all = await rows()
      const active = all.find((r) => r.state === 'active')
      if (!active) {
        throw new PlinthError(
          'PLINTH_CONFIG_INVALID',
          'No active data key in encryption_keys: restart a replica (it creates one) or run `plinth keys rotate`.',
        )
      }
      const keys = [active, ...all.filter((r) => r.state === 'retiring')].map((r) =>
        unwrapDataKey(masters, r.id, r.wrapped_key),
      )
      const known = new Set(all.map((r) => r.id))
      for (const l of legacy) if (!known.has(l.id)) keys.push(l.key)
      return keyringFromKeys(keys)
    },

    async sweepKeyring(log) {
      const all = await rows()
      const active = all.find((r) => r.state === 'active')
      if (!active) throw new PlinthError('PLINTH_CONFIG_INVALID', 'No active data key in encryption_keys.')
      const keys = [unwrapDataKey(masters, active.id, active.wrapped_key)]
      for (const r of all) {
        if (r === active) continue
        try {
          keys.push(unwrapDataKey(masters, r.id, r.wrapped_key))
        } catch (err) {
          log?.warn({ keyId: r.id, err }, 'a data key cannot be unwrapped; values under it will not move')
        }
      }
      for (const l of legacy) keys.push(l.key)
      return keyringFromKeys(keys)
    },

    beginRotation() {
      return withLock(async (trx) => {
        const all = await rows(trx)
        const retiringIds = all.filter((r) => r.state === 'retiring').map((r) => r.id)
        const active = all.find((r) => r.state === 'active')
        if (active && retiringIds.length > 0) return { activeId: active.id, retiringIds }
        if (active) {
          await trx
            .updateTable('encryption_keys')
            .set({ state: 'retiring' })
            .where('id', '=', active.id)
            .execute()
        }
        const createdId = await insertNewActive(trx)
        await record(trx, 'key:rotated', createdId, { previous: active?.id ?? null })
        return { activeId: createdId, createdId, retiringIds: active ? [active.id] : [] }
      })
    },

    withLock,

    async retire(trx, ids) {
      if (ids.length === 0) return
      const now = sql<Date>`now()`
      const retired = await trx
        .updateTable('encryption_keys')
        .set({ state: 'retired', retired_at: now })
        .where('id', 'in', ids)
        .where('state', '=', 'retiring')
        .returning('id')
        .execute()
      const recorded = new Set(retired.map((r) => r.id))
      for (const id of recorded)
        await record(trx, 'key:retired', id, { legacy: legacy.some((l) => l.id === id) })
      for (const l of legacy) {
        if (!ids.includes(l.id)) continue
        if (!recorded.has(l.id)) await record(trx, 'key:retired', l.id, { legacy: true })
        await trx
          .insertInto('encryption_keys')
          .values({
            id: l.id,
            wrapped_key: wrapDataKey(masters.current, l.id, l.key),
            state: 'retired',
            retired_at: now,
          })
          .onConflict((oc) => oc.column('id').doUpdateSet({ state: 'retired', retired_at: now }))
          .execute()
      }
    },

    async rewrap(legacyInUse) {
      const currentKek = wrappingKeyId(masters.current)
      const rewrapped: string[] = []
      const kept: string[] = []
      await withLock(async (trx) => {
        for (const r of await rows(trx)) {
          if (wrappingKeyIdOf(r.wrapped_key) === currentKek) continue
          const key = unwrapDataKey(masters, r.id, r.wrapped_key)
          await trx
            .updateTable('encryption_keys')
            .set({ wrapped_key: wrapDataKey(masters.current, r.id, key) })
            .where('id', '=', r.id)
            .execute()
          await record(trx, 'key:rewrapped', r.id, { state: r.state })
          rewrapped.push(r.id)
        }
        // The previous master's legacy key is derived from it, so it vanishes with it: keep it
        // as a wrapped row while values still use it, and the next rotation moves them.
        const known = new Set((await rows(trx)).map((r) => r.id))
        for (const l of legacy.slice(1)) {
          if (known.has(l.id) || !(await legacyInUse(l.id))) continue
          await trx
            .insertInto('encryption_keys')
            .values({ id: l.id, wrapped_key: wrapDataKey(masters.current, l.id, l.key), state: 'retiring' })
            .execute()
          await record(trx, 'key:rewrapped', l.id, { state: 'retiring', legacy: true })
          kept.push(l.id)
        }
      })
      return { rewrapped, kept }
    },
  }
}

/** The ids of the legacy keys of these master keys (current first). */
export function legacyKeyIds(masters: MasterKeys): string[] {
  return legacyKeys(masters).map((l) => l.id)
}
