import { CompiledQuery, type Kysely, sql, type Transaction } from 'kysely'
import { AUDIT_ACTION, type AuditEntry } from '../../core/audit.ts'
import { deferredStatement } from '../../infra/db/deferred-statements.ts'
import { preparedStatement } from '../../infra/db/prepared-statements.ts'
import type { PlinthTables } from '../../infra/db/tables.ts'
import { redactDeep } from '../../observability/logger.ts'
import { GENESIS_HASH } from './audit-hash.ts'
import './audit.tables.ts'

/**
 * Key of the transaction-level advisory lock that serializes sealing and pruning (one chain head at
 * a time). Writers of audit rows never take it. Any constant would do; this one is not Kysely's
 * migration lock.
 */
export const AUDIT_CHAIN_LOCK = 7_265_724_541_029_181_077n

type Db = Kysely<PlinthTables>

// biome-ignore lint/suspicious/noControlCharactersInRegex: NUL is what PostgreSQL refuses in text and jsonb
const NUL = /\u0000/g
/** Text PostgreSQL accepts: no NUL, no lone surrogate. */
const clean = (s: string) => s.replace(NUL, '').toWellFormed()
const text = (s: string | undefined, max: number) => (s === undefined ? null : clean(s).slice(0, max))

/** JSON text for a jsonb column: secrets masked by key (as in logs), strings cleaned; null when absent. */
function jsonColumn(value: unknown): string | null {
  if (value === undefined || value === null) return null
  return JSON.stringify(redactDeep(value), (_key, v: unknown) => (typeof v === 'string' ? clean(v) : v))
}

/** The last link of the chain: the newest sealed row, else the last pruning checkpoint, else genesis. */
export async function chainHead(trx: Db): Promise<{ seq: bigint; hash: string }> {
  const last = await trx
    .selectFrom('audit_log')
    .select(['seq', 'hash'])
    .where('seq', 'is not', null)
    .orderBy('seq', 'desc')
    .limit(1)
    .executeTakeFirst()
  if (last?.seq && last.hash) return { seq: BigInt(last.seq), hash: last.hash }
  const checkpoint = await trx
    .selectFrom('audit_checkpoints')
    .select(['last_seq', 'last_hash'])
    .orderBy('id', 'desc')
    .limit(1)
    .executeTakeFirst()
  return checkpoint
    ? { seq: BigInt(checkpoint.last_seq), hash: checkpoint.last_hash }
    : { seq: 0n, hash: GENESIS_HASH }
}

/** Takes the chain lock for the rest of the transaction. */
export async function lockChain(trx: Transaction<PlinthTables>): Promise<void> {
  await sql`select pg_advisory_xact_lock(${AUDIT_CHAIN_LOCK})`.execute(trx)
}

/**
 * The insert every audited change pays for, written once: building it through the query builder on
 * each call costs about 25 µs of CPU, ten times the rest of `record` (measured on the project's
 * 2-core machine), all of it while the caller holds a pooled connection. On PostgreSQL it is a named
 * prepared statement, parsed and planned once per connection instead of on every change (about a
 * third of what the insert costs the server: docs/decisions/0035-audited-write-cost.md), and,
 * inside a transaction, deferred: it leaves with the transaction's next statement, its COMMIT
 * usually, in one write, instead of costing a round trip of its own, and with the COMMIT under one
 * Sync, so that PostgreSQL answers both at once (infra/db/deferred-statements.ts,
 * docs/decisions/0038-audited-write-round-trip.md, 0044-audited-write-3.md).
 */
const INSERT_SQL = deferredStatement(
  preparedStatement(`insert into audit_log (at, actor_type, actor_id, actor_token_id, action, target_type,
  target_id, outcome, ip, user_agent, request_id, details, changes)
  values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::jsonb, $13::jsonb)`),
)

/** Inserts one unsealed audit row with `db` (see `Audit.record`). */
export async function insertAuditEntry(db: Db, entry: AuditEntry): Promise<void> {
  if (!AUDIT_ACTION.test(entry.action))
    throw new TypeError(`audit action "${entry.action}" must look like noun:verb (user:role-changed)`)
  await db.executeQuery(
    CompiledQuery.raw(INSERT_SQL, [
      new Date(),
      entry.actor.type,
      text(entry.actor.id, 128),
      text(entry.actor.tokenId, 128),
      entry.action,
      text(entry.target?.type, 64),
      text(entry.target?.id, 256),
      entry.outcome,
      text(entry.ip, 64),
      text(entry.userAgent, 512),
      text(entry.requestId, 128),
      jsonColumn(entry.details),
      jsonColumn(entry.changes),
    ]),
  )
}
