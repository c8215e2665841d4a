/**
 * A prototype of the audit chain that decision 0049 said the 0.8 goal would need, measured by
 * decompose.ts (`BENCH_AUDIT_PROTOTYPE=on`) in its scratch database only; Plinth does not use it
 * (docs/decisions/0050-audit-seal-prototype.md):
 *
 * - the row's content hash is computed by Node *at insert*, in the change's transaction, from six
 *   random field salts drawn there (no HMAC derivation), and stored with the row;
 * - sealing never rewrites a row: every 100 ms (SEAL_EVERY_MS) one seal record chains the ids and content hashes of
 *   the rows after the last sealed id (`bench_audit_seals`, insert-only).
 *
 * What it leaves out, since it only costs a couple of queries per batch: waiting, before sealing up
 * to an id, for the transactions that were running when that id was handed out (a rolled-back or
 * late insert would otherwise fall outside the chain), and verification, pruning and erasure.
 */
import { hash, randomBytes } from 'node:crypto'
import { CompiledQuery, type Kysely, sql } from 'kysely'
import type { AuditEntry } from '../../src/core/audit.ts'
import { deferredStatement } from '../../src/infra/db/deferred-statements.ts'
import { preparedStatement } from '../../src/infra/db/prepared-statements.ts'
import type { PlinthTables } from '../../src/infra/db/tables.ts'
import { canonicalJson, GENESIS_HASH } from '../../src/modules/audit/audit-hash.ts'

type Db = Kysely<PlinthTables>

const sha256 = (text: string) => hash('sha256', text, 'hex')
/**
 * How often the prototype seals (`BENCH_AUDIT_PROTOTYPE_EVERY_MS`, default 100 as production's
 * sealer); a value longer than a run leaves all its sealing to the drain at its end.
 */
const SEAL_EVERY_MS = Number(process.env.BENCH_AUDIT_PROTOTYPE_EVERY_MS ?? 100)
if (!(Number.isInteger(SEAL_EVERY_MS) && SEAL_EVERY_MS > 0))
  throw new Error('BENCH_AUDIT_PROTOTYPE_EVERY_MS must be a whole number of milliseconds')
const SEAL_BATCH = 1000
/** Six salts of 16 bytes (32 hex characters) per row. */
const SALTS_HEX = 6 * 32

/** The prototype's columns and seal table, added to the scratch database's audit_log. */
export async function prepareSealPrototype(db: Db): Promise<void> {
  await sql`alter table audit_log add column row_hash text, add column salts text`.execute(db)
  await sql`create table bench_audit_seals (
    id bigint generated always as identity primary key,
    first_id bigint not null, last_id bigint not null, rows integer not null,
    prev_hash text not null, hash text not null, at timestamptz not null default now())`.execute(db)
}

const INSERT_SQL = deferredStatement(
  preparedStatement(`insert into audit_log (at, actor_type, actor_id, actor_token_id, action, target_type,
  target_id, outcome, ip, user_agent, request_id, details, changes, row_hash, salts)
  values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::jsonb, $13::jsonb, $14, $15)`),
)

/** Salts drawn 64 rows at a time: one `getrandom` per 64 inserts. */
let pool = ''
function drawSalts(): string {
  if (pool.length < SALTS_HEX) pool = randomBytes((SALTS_HEX / 2) * 64).toString('hex')
  const salts = pool.slice(0, SALTS_HEX)
  pool = pool.slice(SALTS_HEX)
  return salts
}

const json = (v: unknown) => JSON.stringify(v ?? null)

/** Inserts `entry` with its salts and content hash (the entry's strings are used as they are). */
export async function insertPrototypeEntry(db: Db, entry: AuditEntry): Promise<void> {
  const at = new Date()
  const salts = drawSalts()
  const erasable = [entry.actor.id, entry.target?.id, entry.ip, entry.userAgent, entry.details, entry.changes]
  const c = erasable.map((value, i) =>
    sha256(`${salts.slice(i * 32, i * 32 + 32)}:${canonicalJson(value ?? null)}`),
  )
  const document =
    `{"action":${json(entry.action)},"actor":{"tokenId":${json(entry.actor.tokenId)},"type":${json(entry.actor.type)}},` +
    `"at":${json(at.toISOString())},"commitments":{"actor_id":"${c[0]}","changes":"${c[5]}","details":"${c[4]}",` +
    `"ip":"${c[2]}","target_id":"${c[1]}","user_agent":"${c[3]}"},"outcome":${json(entry.outcome)},` +
    `"requestId":${json(entry.requestId)},"target":{"type":${json(entry.target?.type)}},"v":3}`
  await db.executeQuery(
    CompiledQuery.raw(INSERT_SQL, [
      at,
      entry.actor.type,
      entry.actor.id ?? null,
      entry.actor.tokenId ?? null,
      entry.action,
      entry.target?.type ?? null,
      entry.target?.id ?? null,
      entry.outcome,
      entry.ip ?? null,
      entry.userAgent ?? null,
      entry.requestId ?? null,
      entry.details === undefined ? null : JSON.stringify(entry.details),
      entry.changes === undefined ? null : JSON.stringify(entry.changes),
      sha256(document),
      salts,
    ]),
  )
}

export interface PrototypeSealer {
  /** Seals every row inserted so far; returns how many. */
  drain(): Promise<number>
  stop(): Promise<void>
}

/** Starts sealing the prototype's rows every SEAL_EVERY_MS, from the rows after `afterId`. */
export function startPrototypeSealer(db: Db, afterId: bigint): PrototypeSealer {
  let lastId = afterId
  let head = GENESIS_HASH
  let running: Promise<number> = Promise.resolve(0)

  async function batch(): Promise<number> {
    const { rows } = await sql<{ id: string; row_hash: string }>`
      select id, row_hash from audit_log where id > ${String(lastId)} and row_hash is not null
      order by id limit ${SEAL_BATCH}`.execute(db)
    if (rows.length === 0) return 0
    const parts = [head]
    for (const r of rows) parts.push(r.id, r.row_hash)
    const sealed = sha256(parts.join(':'))
    await sql`insert into bench_audit_seals (first_id, last_id, rows, prev_hash, hash)
      values (${rows[0]!.id}, ${rows.at(-1)!.id}, ${rows.length}, ${head}, ${sealed})`.execute(db)
    head = sealed
    lastId = BigInt(rows.at(-1)!.id)
    return rows.length
  }
  async function all(): Promise<number> {
    let total = 0
    for (;;) {
      const n = await batch()
      total += n
      if (n < SEAL_BATCH) return total
    }
  }
  const next = () => {
    running = running.then(all, all)
    return running
  }
  const timer = setInterval(() => void next().catch(() => {}), SEAL_EVERY_MS)
  return {
    drain: next,
    async stop() {
      clearInterval(timer)
      await running.catch(() => {})
    },
  }
}
