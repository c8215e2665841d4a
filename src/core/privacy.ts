/**
 * Personal data: the registry through which each module declares which of its columns hold
 * something about a person (`PlinthModule.personalData`), and what the privacy module's export and
 * erasure do with them. Export and erasure are built from this registry alone, so a column that is
 * declared cannot be forgotten by either (and test/privacy-*.test.ts fail on a column that refers
 * to people without being declared). Decision: docs/decisions/0010-privacy-erasure.md.
 */
import { createHmac } from 'node:crypto'
import type { Kysely } from 'kysely'
import type { PlinthTables } from '../infra/db/tables.ts'

/**
 * What custom erasure and export hooks get: the module context. core/module.ts completes this
 * interface (declaration merging), so that the two contracts do not import each other.
 */
// biome-ignore lint/suspicious/noEmptyInterface: completed by core/module.ts
export interface PrivacyHookContext {}

/** The person an export or erasure is about, resolved once from their account. */
export interface PersonalDataSubject {
  readonly userId: string
  /** Normalized (trimmed, lower case): rows found by address compare it case-insensitively. */
  readonly email: string
  /** What replaces their identity where rows are kept (`erased:<32 hex>`, see `pseudonymFor`). */
  readonly pseudonym: string
}

/**
 * One personal column and how the export shows it:
 * - `value`: the stored value (through `exportAs` when given, e.g. to mask single-use links);
 * - `presence`: `true`/`false` only — for credentials (a TOTP secret, a token hash) whose value
 *   tells the person nothing and would be a secret in a file;
 * - `omit`: left out, with the reason in `note` (shown in the export).
 */
export interface PersonalColumn {
  readonly name: string
  readonly export: 'value' | 'presence' | 'omit'
  /** Shown with the column in the export; required for `presence` and `omit`. */
  readonly note?: string
  /** For `value`: what the export shows instead of the raw value. */
  readonly exportAs?: (value: unknown) => unknown
}

/** What erasing one row set did: how many rows, and work for after the commit (dropping caches). */
export interface ErasureOutcome {
  readonly rows: number
  readonly afterCommit?: () => Promise<void>
}

/**
 * What erasure does to the person's rows of a table:
 * - `delete`: the rows go;
 * - `set-null`: the row belongs to something else (a webhook someone created) and stays; the
 *   match column (and `columns`, when given) become NULL;
 * - `custom`: the owning module's own code (pseudonymising audit rows, dropping cached sessions,
 *   removing stored files), in the erasure's transaction.
 */
export type ErasureRule =
  | { readonly action: 'delete' }
  | { readonly action: 'set-null'; readonly columns?: readonly string[] }
  | {
      readonly action: 'custom'
      /** What it does, for people (the export and the runbook show it). */
      readonly describe: string
      run(
        trx: Kysely<PlinthTables>,
        subject: PersonalDataSubject,
        ctx: PrivacyHookContext,
      ): Promise<ErasureOutcome>
    }

/** How a table's rows about the person are found. */
export type PersonalDataMatch =
  /** `column` holds the user id, or the e-mail address (compared case-insensitively). */
  | { readonly column: string; readonly holds: 'user-id' | 'email' }
  /** The module's `exportRows` finds them (and its custom erasure); `describe` says how. */
  | { readonly custom: string }

/**
 * One table (or one way of finding rows in it) holding personal data. A table that refers to
 * people in two ways (invites: the invitee's address, and who invited) has two entries.
 *
 * @example
 * { table: 'sessions', description: 'Sign-in sessions', match: { column: 'user_id', holds: 'user-id' },
 *   columns: [{ name: 'ip', export: 'value' }, { name: 'user_agent', export: 'value' }],
 *   context: ['id', 'created_at'], erase: { action: 'delete' } }
 */
export interface PersonalDataTable {
  /** `table` or `schema.table`. */
  readonly table: string
  /** What the rows are, for the person reading the export. */
  readonly description: string
  readonly match: PersonalDataMatch
  /**
   * Every column of the table that holds personal data (the match column included). Columns not
   * listed must hold nothing about a person.
   */
  readonly columns: readonly PersonalColumn[]
  /** Other columns the export shows beside them so that rows make sense (ids, times, states). */
  readonly context?: readonly string[]
  readonly erase: ErasureRule
  /**
   * Finds the rows for the export instead of the `match` query: plain objects keyed by column,
   * holding at least every column declared (the modes are applied to them afterwards).
   */
  readonly exportRows?: (
    db: Kysely<PlinthTables>,
    subject: PersonalDataSubject,
    ctx: PrivacyHookContext,
  ) => Promise<Record<string, unknown>[]>
  /** Erased after every other entry: the record the others refer to (`users`). */
  readonly last?: boolean
}

/** A registry entry with the module that declared it. */
export interface RegisteredPersonalData extends PersonalDataTable {
  readonly module: string
}

const IDENTIFIER = /^[a-z_][a-z0-9_]*$/
const TABLE = /^([a-z_][a-z0-9_]*\.)?[a-z_][a-z0-9_]*$/

/** Where the entry's rows are found, as a short key (`invites.created_by`, `audit_log`). */
export const entryKey = (e: PersonalDataTable): string =>
  'column' in e.match ? `${e.table}.${e.match.column}` : e.table

/**
 * Collects and checks the modules' declarations: plain identifiers, the match column among the
 * declared columns, a note for every `presence` and `omit` column, no entry declared twice.
 * Called by the composition root, so a bad declaration stops the boot.
 * @throws TypeError naming the offending entry.
 */
export function createPersonalDataRegistry(
  modules: readonly { readonly name: string; readonly personalData?: readonly PersonalDataTable[] }[],
): readonly RegisteredPersonalData[] {
  const seen = new Set<string>()
  const all: RegisteredPersonalData[] = []
  for (const m of modules) {
    for (const e of m.personalData ?? []) {
      const where = `personal data ${m.name}/${e.table}`
      if (!TABLE.test(e.table)) throw new TypeError(`${where}: "${e.table}" is not a lower-case table name`)
      for (const name of [...e.columns.map((c) => c.name), ...(e.context ?? [])])
        if (!IDENTIFIER.test(name)) throw new TypeError(`${where}: "${name}" is not a lower-case column name`)
      if (e.columns.length === 0) throw new TypeError(`${where}: declares no column`)
      const names = new Set(e.columns.map((c) => c.name))
      if (names.size !== e.columns.length) throw new TypeError(`${where}: a column is declared twice`)
      if ('column' in e.match && !names.has(e.match.column))
        throw new TypeError(`${where}: the match column ${e.match.column} must be one of its columns`)
      if (!('column' in e.match) && !e.exportRows)
        throw new TypeError(`${where}: a custom match needs exportRows`)
      if (!('column' in e.match) && e.erase.action !== 'custom')
        throw new TypeError(`${where}: a custom match needs a custom erasure`)
      for (const c of e.columns)
        if (c.export !== 'value' && !c.note?.trim())
          throw new TypeError(`${where}: ${c.name} (${c.export}) needs a note saying why`)
      for (const c of e.context ?? [])
        if (names.has(c)) throw new TypeError(`${where}: ${c} is both personal and context`)
      if (e.erase.action === 'set-null')
        for (const c of e.erase.columns ?? [])
          if (!names.has(c)) throw new TypeError(`${where}: set-null column ${c} is not declared`)
      const key = entryKey(e)
      if (seen.has(key)) throw new TypeError(`personal data ${key} is declared twice`)
      seen.add(key)
      all.push(Object.freeze({ ...e, module: m.name }))
    }
  }
  return Object.freeze(all)
}

/** The prefix of every pseudonym: the audit log's guard lets erasure write nothing else. */
export const PSEUDONYM_PREFIX = 'erased:'

/**
 * The stable pseudonym of a person: `erased:` and 128 bits of HMAC-SHA256 over the user id, keyed
 * by PLINTH_SECRET_KEY (a fixed development key without one). One person's rows keep grouping
 * together; whoever holds the key and a user id can tell whether that id was erased (and re-apply
 * an erasure to a restored backup with the same result); nobody can go back from it.
 */
export function pseudonymFor(userId: string, secretKey: string | undefined): string {
  const key = secretKey ?? 'plinth-development-pseudonym-key'
  const digest = createHmac('sha256', key).update(`plinth.privacy.pseudonym:${userId}`).digest('hex')
  return `${PSEUDONYM_PREFIX}${digest.slice(0, 32)}`
}
