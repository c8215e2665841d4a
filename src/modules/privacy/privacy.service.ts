import { type Kysely, type RawBuilder, sql } from 'kysely'
import { type AuditEntry, auditEntryOf, type SecurityEventInput } from '../../core/audit.ts'
import { normalizeEmail } from '../../core/identity.ts'
import type { ModuleContext } from '../../core/module.ts'
import {
  type ErasureOutcome,
  entryKey,
  type PersonalDataSubject,
  pseudonymFor,
  type RegisteredPersonalData,
} from '../../core/privacy.ts'
import type { Actor } from '../../core/security-events.ts'
import type { PlinthTables } from '../../infra/db/tables.ts'
import { PlinthError } from '../../shared/errors.ts'

type Db = Kysely<PlinthTables>

/** The format tag of an export; bumped if its shape ever changes. */
export const EXPORT_FORMAT = 'plinth.personal-data/1'

export interface ExportedTable {
  readonly module: string
  readonly table: string
  readonly description: string
  /** How the rows were found. */
  readonly match: string
  /** Every declared personal column and how it is shown (`presence`: true/false; `omit`: not in the rows). */
  readonly columns: Record<string, { export: 'value' | 'presence' | 'omit'; note?: string }>
  readonly rows: Record<string, unknown>[]
}

export interface PersonalDataExport {
  readonly format: typeof EXPORT_FORMAT
  readonly generatedAt: string
  readonly subject: { readonly userId: string; readonly email: string }
  readonly tables: ExportedTable[]
}

export interface ErasureReport {
  readonly erasedAt: string
  /** What stands for the person in the rows that were kept (the audit log). */
  readonly pseudonym: string
  /** Rows erased (deleted, emptied or pseudonymised) per registry entry (`table.column`). */
  readonly rows: Readonly<Record<string, number>>
}

/** Who erases: the person themselves, an administrator, or an operator at the command line. */
export type Eraser =
  | { readonly via: 'self' }
  | { readonly via: 'admin'; readonly actor: Actor }
  | { readonly via: 'cli' }

export interface RequestMeta {
  readonly ip?: string | undefined
  readonly userAgent?: string | undefined
  readonly requestId?: string | undefined
}

const iso = (v: unknown) => (v instanceof Date ? v.toISOString() : v)

function where(e: RegisteredPersonalData, subject: PersonalDataSubject): RawBuilder<unknown> {
  if (!('column' in e.match)) throw new TypeError(`${entryKey(e)} has a custom match`)
  const column = sql.ref(e.match.column)
  return e.match.holds === 'email'
    ? sql`lower(${column}) = ${subject.email}`
    : sql`${column} = ${subject.userId}`
}

/** The rows of one entry with each personal column as its mode says. */
async function exportEntry(
  db: Db,
  e: RegisteredPersonalData,
  subject: PersonalDataSubject,
  ctx: ModuleContext,
): Promise<ExportedTable> {
  let raw: Record<string, unknown>[]
  if (e.exportRows) raw = await e.exportRows(db, subject, ctx)
  else {
    const names = [...(e.context ?? []), ...e.columns.filter((c) => c.export !== 'omit').map((c) => c.name)]
    const { rows } = await sql<Record<string, unknown>>`select ${sql.join(names.map((n) => sql.ref(n)))}
      from ${sql.table(e.table)} where ${where(e, subject)}`.execute(db)
    raw = rows
  }
  const rows = raw.map((r) => {
    const out: Record<string, unknown> = {}
    for (const c of e.context ?? []) out[c] = iso(r[c] ?? null)
    for (const c of e.columns) {
      const v = r[c.name] ?? null
      if (c.export === 'value') out[c.name] = iso(c.exportAs ? c.exportAs(v) : v)
      else if (c.export === 'presence') out[c.name] = v !== null
    }
    return out
  })
  return {
    module: e.module,
    table: e.table,
    description: e.description,
    match:
      'column' in e.match
        ? `${e.match.column} is your ${e.match.holds === 'email' ? 'e-mail address' : 'user id'}`
        : e.match.custom,
    columns: Object.fromEntries(
      e.columns.map((c) => [c.name, { export: c.export, ...(c.note ? { note: c.note } : {}) }]),
    ),
    rows,
  }
}

/** Runs one entry's erasure in the transaction. */
async function eraseEntry(
  trx: Db,
  e: RegisteredPersonalData,
  subject: PersonalDataSubject,
  ctx: ModuleContext,
): Promise<ErasureOutcome> {
  if (e.erase.action === 'custom') return e.erase.run(trx, subject, ctx)
  if (e.erase.action === 'delete') {
    const r = await sql`delete from ${sql.table(e.table)} where ${where(e, subject)}`.execute(trx)
    return { rows: Number(r.numAffectedRows ?? 0) }
  }
  const match = 'column' in e.match ? [e.match.column] : []
  const columns = [...new Set([...match, ...(e.erase.columns ?? [])])]
  const r =
    await sql`update ${sql.table(e.table)} set ${sql.join(columns.map((c) => sql`${sql.ref(c)} = null`))}
    where ${where(e, subject)}`.execute(trx)
  return { rows: Number(r.numAffectedRows ?? 0) }
}

/**
 * Export and erasure of one person's data, driven by the modules' `personalData` declarations
 * (`ctx.personalData`). Erasure is one transaction: every entry in registry order (`last` ones at
 * the end), then the `user:erased` audit row; caches are dropped after the commit.
 */
export function createPrivacyService(ctx: ModuleContext) {
  const db = ctx.db.kysely
  const log = ctx.logger.child({ component: 'privacy' })
  const users = ctx.users
  const ordered = [...ctx.personalData.filter((e) => !e.last), ...ctx.personalData.filter((e) => e.last)]

  const subjectOf = (user: { id: string; email: string }): PersonalDataSubject => ({
    userId: user.id,
    email: normalizeEmail(user.email),
    pseudonym: pseudonymFor(user.id, ctx.config.secretKey),
  })

  return {
    /** The user id of `idOrEmail` (a user id, or an address compared case-insensitively). */
    async resolveUser(idOrEmail: string): Promise<string> {
      const value = idOrEmail.trim()
      if (/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(value))
        return (await users.get(value.toLowerCase())).id
      // The accounts search matches substrings: page through its matches for the exact address.
      const email = normalizeEmail(value)
      for (let offset = 0; ; offset += 100) {
        const page = await users.list({ email, limit: 100, offset })
        const found = page.find((u) => normalizeEmail(u.email) === email)
        if (found) return found.id
        if (page.length < 100)
          throw new PlinthError('PLINTH_USER_NOT_FOUND', `No user has the address ${value}.`)
      }
    },

    /** Everything the registry finds about the user, as one JSON document. */
    async export(userId: string): Promise<PersonalDataExport> {
      const subject = subjectOf(await users.get(userId))
      const tables: ExportedTable[] = []
      for (const e of ctx.personalData) tables.push(await exportEntry(db, e, subject, ctx))
      return {
        format: EXPORT_FORMAT,
        generatedAt: new Date().toISOString(),
        subject: { userId: subject.userId, email: subject.email },
        tables,
      }
    },

    /**
     * Re-authenticates the person before they erase their own account: their password and, with a
     * second factor, a code. A refusal is audited and throws PLINTH_AUTH_INVALID_CREDENTIALS or
     * PLINTH_AUTH_MFA_INVALID.
     */
    async reauthenticate(
      userId: string,
      input: { password: string; code?: string | undefined; recoveryCode?: string | undefined },
      meta: RequestMeta,
    ): Promise<void> {
      const failed = await users.reauthenticate(userId, input, meta)
      if (failed === null) return
      const refused: SecurityEventInput = {
        type: 'user:erased',
        outcome: 'failure',
        actor: { type: 'user', id: userId },
        target: { type: 'user', id: userId },
        ...meta,
        details: { reason: failed === 'password' ? 'wrong-password' : 'second-factor-required' },
      }
      await ctx.audit.record(db, auditEntryOf(refused))
      ctx.securityEvents.emit(refused)
      if (failed === 'password')
        throw new PlinthError('PLINTH_AUTH_INVALID_CREDENTIALS', 'The password is wrong.')
      throw new PlinthError(
        'PLINTH_AUTH_MFA_INVALID',
        'Your account has a second factor: send a current code (or an unused recovery code) with the password.',
      )
    },

    /**
     * Erases the user: every registered entry, in one transaction with its `user:erased` audit row
     * (actor and target are the pseudonym when the person erases themselves, so that the row names
     * nobody). Refuses the last active administrator (PLINTH_USER_LAST_ADMIN).
     */
    async erase(userId: string, eraser: Eraser, meta: RequestMeta = {}): Promise<ErasureReport> {
      const user = await users.get(userId)
      const subject = subjectOf(user)
      // An administrator erasing their own account erases themselves: the record must not name them.
      const by: Eraser = eraser.via === 'admin' && eraser.actor.id === userId ? { via: 'self' } : eraser
      const actor: Actor =
        by.via === 'admin'
          ? by.actor
          : by.via === 'self'
            ? { type: 'user', id: subject.pseudonym }
            : { type: 'system' }
      // Refused early (and again under lock, by the accounts module's erasure of the account).
      if (user.role === 'admin' && user.status === 'active') {
        const admins = await users.list({ role: 'admin', status: 'active', limit: 2, offset: 0 })
        if (admins.length < 2) throw new PlinthError('PLINTH_USER_LAST_ADMIN')
      }
      const erasedAt = new Date()
      // The person's own address and browser would identify them in the row that records their erasure.
      const where = by.via === 'admin' ? meta : { requestId: meta.requestId }
      const { rows, after, event } = await db.transaction().execute(async (trx) => {
        const rows: Record<string, number> = {}
        const after: (() => Promise<void>)[] = []
        for (const e of ordered) {
          const outcome = await eraseEntry(trx, e, subject, ctx)
          const key = entryKey(e)
          rows[key] = (rows[key] ?? 0) + outcome.rows
          if (outcome.afterCommit) after.push(outcome.afterCommit)
        }
        const event: SecurityEventInput = {
          type: 'user:erased',
          outcome: 'success',
          actor,
          target: { type: 'user', id: subject.pseudonym },
          ...where,
          details: { by: by.via },
        }
        const entry: AuditEntry = { ...auditEntryOf(event), details: { by: by.via, rows } }
        await ctx.audit.record(trx, entry)
        return { rows, after, event }
      })
      for (const run of after)
        await run().catch((err: unknown) =>
          log.warn({ err }, 'dropping cached credentials after an erasure failed'),
        )
      ctx.securityEvents.emit(event)
      log.info({ pseudonym: subject.pseudonym, by: by.via }, 'personal data erased')
      return { erasedAt: erasedAt.toISOString(), pseudonym: subject.pseudonym, rows }
    },
  }
}

export type PrivacyService = ReturnType<typeof createPrivacyService>
