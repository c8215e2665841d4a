import { randomBytes } from 'node:crypto'
import { CompiledQuery, type Kysely, sql, type Transaction } from 'kysely'
import type { Logger } from 'pino'
import { AUDIT_ACTION, type Audit, type AuditEntry } from '../../core/audit.ts'
import type { PlinthTables } from '../../infra/db/tables.ts'
import { redactDeep } from '../../observability/logger.ts'
import { GENESIS_HASH, rowHash } from './audit-hash.ts'
import './audit.tables.ts'

/**
 * Key of the transaction-level advisory lock that serializes sealing and pruning (one chain head at
 * a time). Writers of audit rows never take it. Any constant would do; this one is not Kysely's
 * migration lock.
 */
export const AUDIT_CHAIN_LOCK = 7_265_724_541_029_181_077n
/**
 * How long after a `record` the sealer runs: its transaction has usually committed by then, and
 * under load one seal chains every row of the interval in one short transaction.
 */
const SEAL_DELAY_MS = 100
/** Rows that may stay unsealed (a seal ran before their transaction committed) are picked up this often. */
const SWEEP_MS = 2000
const BATCH = 500

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
 * 2-core machine), all of it while the caller holds a pooled connection.
 */
const INSERT_SQL = `insert into audit_log (at, actor_type, actor_id, actor_token_id, action, target_type,
  target_id, outcome, ip, user_agent, request_id, details, changes)
  values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::jsonb, $13::jsonb)`

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

/** Seals up to BATCH committed rows in one transaction; returns how many. */
async function sealBatch(db: Db): Promise<number> {
  const waiting = await db
    .selectFrom('audit_log')
    .select('id')
    .where('seq', 'is', null)
    .limit(1)
    .executeTakeFirst()
  if (!waiting) return 0
  return db.transaction().execute(async (trx) => {
    await lockChain(trx)
    // Read after the lock (a new statement, so a new snapshot under READ COMMITTED): the head and
    // the rows committed by now, including those another sealer just chained.
    const pending = await trx
      .selectFrom('audit_log')
      .selectAll()
      .where('seq', 'is', null)
      .orderBy('id')
      .limit(BATCH)
      .execute()
    if (pending.length === 0) return 0
    let { seq, hash } = await chainHead(trx)
    // Each row gets its own random salt: the hash commits to its erasable fields through it (v2).
    const salts = randomBytes(32 * pending.length).toString('hex')
    const links = pending.map((row, i) => {
      seq += 1n
      const salt = salts.slice(i * 64, (i + 1) * 64)
      const link = {
        id: row.id,
        seq: String(seq),
        prev: hash,
        salt,
        hash: rowHash({ ...row, salt }, String(seq), hash),
      }
      hash = link.hash
      return link
    })
    await sql`update audit_log as a set seq = v.seq, prev_hash = v.prev, hash = v.hash, salt = v.salt
      from (values ${sql.join(links.map((l) => sql`(${l.id}::bigint, ${l.seq}::bigint, ${l.prev}, ${l.hash}, ${l.salt})`))})
        as v (id, seq, prev, hash, salt)
      where a.id = v.id`.execute(trx)
    return links.length
  })
}

/**
 * The audit log writer and its sealer. `record` inserts the row in the caller's transaction and
 * takes no lock, so audited changes commit as concurrently as unaudited ones; the sealer chains
 * committed rows in batches under a transaction-level advisory lock (the decision and what it
 * costs: docs/decisions/0007-audit-hash-chain.md).
 */
export function createAudit(deps: { db: Db; logger: Logger }): Audit {
  const { db } = deps
  const log = deps.logger.child({ component: 'audit' })
  let running: Promise<number> | undefined
  let queued: Promise<number> | undefined
  let timer: NodeJS.Timeout | undefined
  let sweep: NodeJS.Timeout | undefined
  let closed = false
  let failing = false
  /** A row was recorded since the last seal started. */
  let dirty = false

  async function run(): Promise<number> {
    dirty = false
    let total = 0
    for (;;) {
      const n = await sealBatch(db)
      total += n
      if (n < BATCH) return total
    }
  }

  /** One seal at a time per process; callers arriving during a run share the next one. */
  function seal(): Promise<number> {
    if (!running) {
      running = run().finally(() => {
        running = undefined
      })
      // Whoever called gets the failure; this promise must never count as unhandled on its own
      // (a database outage would otherwise surface as an unhandled rejection).
      running.catch(() => {})
      return running
    }
    queued ??= running
      .catch(() => 0)
      .then(() => {
        queued = undefined
        return seal()
      })
    queued.catch(() => {})
    return queued
  }

  function background(): void {
    seal().then(
      () => {
        if (failing) log.info('audit sealing recovered')
        failing = false
      },
      (err: unknown) => {
        // Once per outage: the health checks already report a database that is down.
        if (!failing) log.warn({ err }, 'audit sealing failed; unsealed rows are retried')
        failing = true
      },
    )
  }

  function sealSoon(): void {
    dirty = true
    if (closed || timer) return
    timer = setTimeout(() => {
      timer = undefined
      background()
    }, SEAL_DELAY_MS)
    timer.unref()
  }

  return Object.freeze({
    async record(trx: Db, entry: AuditEntry): Promise<void> {
      await insertAuditEntry(trx, entry)
      sealSoon()
    },
    seal,
    start() {
      if (closed || sweep) return
      sweep = setInterval(background, SWEEP_MS)
      sweep.unref()
      background()
    },
    async close() {
      closed = true
      clearTimeout(timer)
      clearInterval(sweep)
      timer = undefined
      sweep = undefined
      await Promise.allSettled([running, queued])
      if (!dirty) return
      await seal().catch((err: unknown) =>
        log.warn({ err }, 'audit rows left unsealed at shutdown; the next start seals them'),
      )
    },
  })
}
