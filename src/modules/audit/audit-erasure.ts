import { type Kysely, sql } from 'kysely'
import type { ErasureOutcome, PersonalDataSubject, PersonalDataTable } from '../../core/privacy.ts'
import type { PlinthTables } from '../../infra/db/tables.ts'
import { type AuditErasure, type AuditRow, ERASABLE_FIELDS, type ErasableField } from './audit.tables.ts'
import { canonicalJson, commitment, erasableValue, fieldSalts, isV1 } from './audit-hash.ts'
import { AUDIT_CHAIN_LOCK } from './audit-rows.ts'

type Db = Kysely<PlinthTables>
const BATCH = 500

const escapeLike = (s: string) => s.replace(/[\\%_]/g, '\\$&')
const escapeRegExp = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
/** How a string appears inside JSON text. */
const inJson = (s: string) => JSON.stringify(s).slice(1, -1)

/**
 * The rows about the person: those they did, those done to them, and those whose details or
 * changes name their id or address (an invitation sent to them, a failed sign-in with their
 * address, an administrator's search for it). Scans the table in id order: erasure is rare, and
 * the log has no index on these fields.
 */
function rowsAbout(db: Db, subject: PersonalDataSubject, afterId: string, limit: number) {
  const email = `%${escapeLike(inJson(subject.email))}%`
  const id = `%${escapeLike(subject.userId)}%`
  return db
    .selectFrom('audit_log')
    .selectAll()
    .where('id', '>', afterId)
    .where((eb) =>
      eb.or([
        eb('actor_id', '=', subject.userId),
        eb('target_id', '=', subject.userId),
        eb('actor_id', 'ilike', email),
        eb('target_id', 'ilike', email),
        eb(sql<string>`details::text`, 'ilike', email),
        eb(sql<string>`changes::text`, 'ilike', email),
        eb(sql<string>`details::text`, 'like', id),
        eb(sql<string>`changes::text`, 'like', id),
      ]),
    )
    .orderBy('id')
    .limit(limit)
}

async function allRowsAbout(db: Db, subject: PersonalDataSubject): Promise<AuditRow[]> {
  const out: AuditRow[] = []
  let after = '0'
  for (;;) {
    const rows = await rowsAbout(db, subject, after, BATCH).execute()
    out.push(...rows)
    if (rows.length < BATCH) return out
    after = String(rows.at(-1)!.id)
  }
}

/** True when someone other than the person acted (their address and user agent are theirs, not the person's). */
const someoneElseActed = (row: AuditRow, names: (s: string) => boolean) =>
  (row.actor_type === 'user' || row.actor_type === 'token') && row.actor_id !== null && !names(row.actor_id)

function replacer(subject: PersonalDataSubject) {
  const email = escapeRegExp(subject.email)
  const emailIn = new RegExp(email, 'i')
  const everyEmailInJson = new RegExp(escapeRegExp(inJson(subject.email)), 'gi')
  return {
    /** True when the text names the person (their id or address). */
    names: (s: string) => s.includes(subject.userId) || emailIn.test(s),
    json: (v: unknown) =>
      v === null || v === undefined
        ? null
        : (JSON.parse(
            JSON.stringify(v)
              .replace(everyEmailInJson, subject.pseudonym)
              .replaceAll(subject.userId, subject.pseudonym),
          ) as unknown),
  }
}

/** The row with the person replaced by their pseudonym; the erasable fields that changed. */
function pseudonymised(row: AuditRow, subject: PersonalDataSubject) {
  const r = replacer(subject)
  const id = (v: string | null) => (v !== null && r.names(v) ? subject.pseudonym : v)
  const keepAddress = someoneElseActed(row, r.names)
  const next: Record<ErasableField, unknown> = {
    actor_id: id(row.actor_id),
    target_id: id(row.target_id),
    ip: keepAddress ? row.ip : null,
    user_agent: keepAddress ? row.user_agent : null,
    details: r.json(row.details),
    changes: r.json(row.changes),
  }
  const changed = ERASABLE_FIELDS.filter(
    (f) => canonicalJson(next[f]) !== canonicalJson(erasableValue(row, f)),
  )
  return { next, changed }
}

/**
 * The erasure record of a sealed row (see `AuditErasure`): each rewritten field's commitment is
 * computed with its salt, which is then dropped; a field rewritten by an earlier erasure keeps the
 * commitment it already had.
 */
function erasureRecord(row: AuditRow, changed: readonly ErasableField[], pseudonym: string): AuditErasure {
  const at = new Date().toISOString()
  const pseudonyms = [...new Set([...(row.erasure?.pseudonyms ?? []), pseudonym])]
  if (isV1(row)) return { at, pseudonyms, v1: true }
  const salts = { ...fieldSalts(row) }
  const commitments = { ...(row.erasure?.commitments ?? {}) }
  for (const f of changed) {
    const salt = salts[f]
    if (salt !== undefined) commitments[f] = commitment(salt, erasableValue(row, f))
    delete salts[f]
  }
  return { at, pseudonyms, commitments, salts }
}

/**
 * Pseudonymises the person's audit rows in the caller's transaction: their id (as actor, target,
 * or inside details and changes) and address become their pseudonym; the IP address and user agent
 * go, unless someone else acted. Sealed rows trade their salt for an erasure record so that the
 * chain still verifies; unsealed ones are sealed later over the new values. Holds the chain lock
 * (the sealer must not hash a row this transaction is rewriting).
 */
export async function eraseFromAudit(trx: Db, subject: PersonalDataSubject): Promise<ErasureOutcome> {
  await sql`select pg_advisory_xact_lock(${AUDIT_CHAIN_LOCK})`.execute(trx)
  await sql`select set_config('plinth.audit_erase', 'on', true)`.execute(trx)
  let rows = 0
  let after = '0'
  for (;;) {
    const batch = await rowsAbout(trx, subject, after, BATCH).execute()
    const updates = batch.flatMap((row) => {
      const { next, changed } = pseudonymised(row, subject)
      if (changed.length === 0) return []
      const erasure = row.seq === null ? null : erasureRecord(row, changed, subject.pseudonym)
      const json = (v: unknown) => (v === null ? null : JSON.stringify(v))
      return [
        sql`(${row.id}::bigint, ${next.actor_id}::text, ${next.target_id}::text, ${next.ip}::text,
          ${next.user_agent}::text, ${json(next.details)}::jsonb, ${json(next.changes)}::jsonb, ${json(erasure)}::jsonb)`,
      ]
    })
    if (updates.length > 0) {
      await sql`update audit_log as a set actor_id = v.actor_id, target_id = v.target_id, ip = v.ip,
          user_agent = v.user_agent, details = v.details, changes = v.changes, salt = null, erasure = v.erasure
        from (values ${sql.join(updates)}) as v (id, actor_id, target_id, ip, user_agent, details, changes, erasure)
        where a.id = v.id`.execute(trx)
      rows += updates.length
    }
    if (batch.length < BATCH) break
    after = String(batch.at(-1)!.id)
  }
  await sql`select set_config('plinth.audit_erase', 'off', true)`.execute(trx)
  return { rows }
}

/**
 * The person's audit rows for their export, oldest first. Where someone else acted (an
 * administrator), that person's id, address and user agent are withheld.
 */
async function exportRows(db: Db, subject: PersonalDataSubject): Promise<Record<string, unknown>[]> {
  const r = replacer(subject)
  return (await allRowsAbout(db, subject)).map((row) => {
    const other = someoneElseActed(row, r.names)
    return {
      id: String(row.id),
      seq: row.seq,
      at: row.at.toISOString(),
      actor_type: row.actor_type,
      actor_id: other ? null : row.actor_id,
      action: row.action,
      target_type: row.target_type,
      target_id: row.target_id,
      outcome: row.outcome,
      ip: other ? null : row.ip,
      user_agent: other ? null : row.user_agent,
      request_id: row.request_id,
      details: row.details ?? null,
      changes: row.changes ?? null,
    }
  })
}

/** The audit log's personal data: kept, but pseudonymised on erasure (decision 0010). */
export const auditPersonalData: readonly PersonalDataTable[] = [
  {
    table: 'audit_log',
    description:
      'The audit trail: what you did, what was done to your account, and records naming your address',
    match: {
      custom:
        'actor_id or target_id is the user id, or details or changes name the user id or the e-mail address',
    },
    columns: [
      { name: 'actor_id', export: 'value', note: 'withheld (null) where someone else acted' },
      { name: 'target_id', export: 'value' },
      { name: 'ip', export: 'value', note: 'withheld (null) where someone else acted' },
      { name: 'user_agent', export: 'value', note: 'withheld (null) where someone else acted' },
      { name: 'details', export: 'value' },
      { name: 'changes', export: 'value' },
    ],
    context: ['id', 'seq', 'at', 'actor_type', 'action', 'target_type', 'outcome', 'request_id'],
    exportRows: async (db, subject, ctx) => {
      // Rows committed a moment ago join the chain first, so that they show their place in it.
      await ctx.audit.seal()
      return exportRows(db, subject)
    },
    erase: {
      action: 'custom',
      describe:
        'kept, pseudonymised: the id and address become the pseudonym, the IP address and user agent go (unless someone else acted); the hash chain still verifies',
      run: (trx, subject) => eraseFromAudit(trx, subject),
    },
  },
]
