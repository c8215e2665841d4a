import type { Kysely, SelectQueryBuilder } from 'kysely'
import type { PlinthTables } from '../../infra/db/tables.ts'
import { PlinthError } from '../../shared/errors.ts'
import type { AuditRow } from './audit.tables.ts'

type Db = Kysely<PlinthTables>

export interface AuditFilter {
  /** The acting user's id. */
  readonly actor?: string | undefined
  readonly actorType?: AuditRow['actor_type'] | undefined
  /** `noun:verb`, or `noun:*` for every verb of a noun. */
  readonly action?: string | undefined
  readonly targetType?: string | undefined
  readonly targetId?: string | undefined
  readonly outcome?: AuditRow['outcome'] | undefined
  readonly requestId?: string | undefined
  /** Rows at or after this time. */
  readonly from?: Date | undefined
  /** Rows before this time. */
  readonly to?: Date | undefined
}

/** One audit row as the API and the export show it. bigint ids are strings. */
export interface AuditView {
  readonly id: string
  readonly seq: string
  readonly at: string
  readonly actor: { readonly type: string; readonly id: string | null; readonly tokenId: string | null }
  readonly action: string
  readonly target: { readonly type: string | null; readonly id: string | null }
  readonly outcome: string
  readonly ip: string | null
  readonly userAgent: string | null
  readonly requestId: string | null
  readonly details: unknown
  readonly changes: unknown
  readonly prevHash: string
  readonly hash: string
  /** Hash v2: the key of the commitments to the erasable fields (null on v1 rows and erased ones). */
  readonly salt: string | null
  /** What erasure kept so that a pseudonymised row still verifies (null unless erased after sealing). */
  readonly erasure: unknown
}

export function auditView(row: AuditRow): AuditView {
  return {
    id: String(row.id),
    seq: String(row.seq),
    at: row.at.toISOString(),
    actor: { type: row.actor_type, id: row.actor_id, tokenId: row.actor_token_id },
    action: row.action,
    target: { type: row.target_type, id: row.target_id },
    outcome: row.outcome,
    ip: row.ip,
    userAgent: row.user_agent,
    requestId: row.request_id,
    details: row.details ?? null,
    changes: row.changes ?? null,
    prevHash: row.prev_hash!,
    hash: row.hash!,
    salt: row.salt,
    erasure: row.erasure ?? null,
  }
}

function filtered(db: Db, f: AuditFilter): SelectQueryBuilder<PlinthTables, 'audit_log', AuditRow> {
  let q = db.selectFrom('audit_log').selectAll().where('seq', 'is not', null)
  if (f.actor !== undefined) q = q.where('actor_id', '=', f.actor)
  if (f.actorType !== undefined) q = q.where('actor_type', '=', f.actorType)
  if (f.action?.endsWith(':*'))
    q = q.where('action', 'like', `${f.action.slice(0, -1).replace(/[\\%_]/g, '\\$&')}%`)
  else if (f.action !== undefined) q = q.where('action', '=', f.action)
  if (f.targetType !== undefined) q = q.where('target_type', '=', f.targetType)
  if (f.targetId !== undefined) q = q.where('target_id', '=', f.targetId)
  if (f.outcome !== undefined) q = q.where('outcome', '=', f.outcome)
  if (f.requestId !== undefined) q = q.where('request_id', '=', f.requestId)
  if (f.from !== undefined) q = q.where('at', '>=', f.from)
  if (f.to !== undefined) q = q.where('at', '<', f.to)
  return q
}

const MAX_BIGINT = 2n ** 63n - 1n

/** An opaque cursor: the chain position the next page starts before. */
export const encodeCursor = (seq: string) => Buffer.from(`seq:${seq}`).toString('base64url')

export function decodeCursor(cursor: string): string {
  const m = /^seq:(\d{1,19})$/.exec(Buffer.from(cursor, 'base64url').toString())
  if (!m || BigInt(m[1]!) > MAX_BIGINT) throw new PlinthError('PLINTH_AUDIT_CURSOR_INVALID')
  return m[1]!
}

/**
 * One page of sealed audit rows, newest first. Paging follows the chain position, which only
 * grows: a client that keeps following `nextCursor` sees every row once.
 */
export async function listAudit(
  db: Db,
  filter: AuditFilter,
  page: { limit: number; cursor?: string | undefined },
): Promise<{ entries: AuditView[]; nextCursor: string | null }> {
  let q = filtered(db, filter)
  if (page.cursor !== undefined) q = q.where('seq', '<', decodeCursor(page.cursor))
  const rows = await q
    .orderBy('seq', 'desc')
    .limit(page.limit + 1)
    .execute()
  const more = rows.length > page.limit
  const entries = rows.slice(0, page.limit).map(auditView)
  return { entries, nextCursor: more ? encodeCursor(entries.at(-1)!.seq) : null }
}

/** Every sealed row matching the filter, oldest first, read in batches (for streaming exports). */
export async function* exportAudit(db: Db, filter: AuditFilter, batch = 500): AsyncGenerator<AuditView> {
  let after = '0'
  for (;;) {
    const rows = await filtered(db, filter).where('seq', '>', after).orderBy('seq').limit(batch).execute()
    for (const row of rows) yield auditView(row)
    if (rows.length < batch) return
    after = String(rows.at(-1)!.seq)
  }
}
