import { randomBytes } from 'node:crypto'
import { CompiledQuery, type Kysely } from 'kysely'
import type { Logger } from 'pino'
import type { Audit, AuditEntry } from '../../core/audit.ts'
import { preparedStatement } from '../../infra/db/prepared-statements.ts'
import type { PlinthTables } from '../../infra/db/tables.ts'
import { verifyAuditChain } from './audit-chain.ts'
import { rowHash } from './audit-hash.ts'
import { AUDIT_CHAIN_LOCK, chainHead, insertAuditEntry, lockChain } from './audit-rows.ts'
import './audit.tables.ts'

export { AUDIT_CHAIN_LOCK, chainHead, insertAuditEntry, lockChain }

type Db = Kysely<PlinthTables>

/**
 * How long after a `record` the sealer runs: its transaction has usually committed by then, and
 * under load one seal chains every row of the interval in one short transaction.
 */
const SEAL_DELAY_MS = 100
/** Rows that may stay unsealed (a seal ran before their transaction committed) are picked up this often. */
const SWEEP_MS = 2000
const BATCH = 500
/**
 * The sealing step for a whole batch: five arrays, whatever the batch size, so the text is fixed (a
 * named prepared statement on PostgreSQL) and neither Kysely nor PostgreSQL has to build and parse
 * a VALUES list of five parameters per row.
 */
const SEAL_SQL =
  preparedStatement(`update audit_log as a set seq = v.seq, prev_hash = v.prev, hash = v.hash, salt = v.salt
  from unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[]) as v (id, seq, prev, hash, salt)
  where a.id = v.id`)
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
    await trx.executeQuery(
      CompiledQuery.raw(SEAL_SQL, [
        links.map((l) => l.id),
        links.map((l) => l.seq),
        links.map((l) => l.prev),
        links.map((l) => l.hash),
        links.map((l) => l.salt),
      ]),
    )
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
    async verifyChain(on: Db) {
      const report = await verifyAuditChain(on)
      return { ok: report.ok, checked: report.checked, head: report.head, failure: report.failure?.message }
    },
    async erasures(on: Db) {
      const rows = await on
        .selectFrom('audit_log')
        .select(['target_id', (eb) => eb.fn.min('at').as('at')])
        .where('action', '=', 'user:erased')
        .where('outcome', '=', 'success')
        .where('target_id', 'is not', null)
        .groupBy('target_id')
        .orderBy('at')
        .execute()
      return rows.map((r) => ({ pseudonym: r.target_id!, at: new Date(r.at as unknown as string) }))
    },
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
