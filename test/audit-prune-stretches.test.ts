import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { type Kysely, sql } from 'kysely'
import type { AuditEntry } from '../src/core/audit.ts'
import type { PlinthTables } from '../src/infra/db/tables.ts'
import { pruneAudit, verifyAuditChain } from '../src/modules/audit/audit-chain.ts'
import { PlinthError } from '../src/shared/errors.ts'
import { bypassingTriggers } from './helpers/bypass-triggers.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'

const entry = (n: number): AuditEntry => ({
  action: 'thing:changed',
  actor: { type: 'user', id: `user-${n}` },
  target: { type: 'thing', id: String(n) },
  outcome: 'success',
  details: { n },
})

const sealedRows = (db: Kysely<PlinthTables>) =>
  db
    .selectFrom('audit_log')
    .select(['id', 'seq', 'at', 'action'])
    .where('seq', 'is not', null)
    .orderBy(sql`seq::bigint`)
    .execute()

const broken = (message: RegExp) => (err: unknown) => {
  assert.ok(err instanceof PlinthError)
  assert.equal(err.code, 'PLINTH_AUDIT_CHAIN_BROKEN')
  assert.match(err.message, message)
  return true
}

describe('audit pruning in stretches, and gaps it refuses to prune over', () => {
  let plinth: TestPlinth
  let db: Kysely<PlinthTables>
  before(async () => {
    plinth = await startTestPlinth()
    db = plinth.db.kysely
  })
  after(() => plinth?.close())

  const recordAndSeal = async (from: number, count: number) => {
    for (let i = 0; i < count; i++) await plinth.context.audit.record(db, entry(from + i))
    await plinth.context.audit.seal()
  }

  it('deletes at most maxRows of the oldest rows per call, each call leaving a checkpoint the chain verifies from', async () => {
    await recordAndSeal(0, 10)
    const rows = await sealedRows(db)
    const firstSeq = BigInt(rows[0]!.seq!)
    const later = new Date(Date.now() + 60_000)

    const first = await pruneAudit(db, { before: later, maxRows: 4 })
    assert.equal(first.pruned, 4)
    assert.equal(first.checkpoint?.lastSeq, String(firstSeq + 3n))
    const second = await pruneAudit(db, { before: later, maxRows: 4 })
    assert.equal(second.pruned, 4)
    assert.equal(second.checkpoint?.lastSeq, String(firstSeq + 7n))

    await plinth.context.audit.seal()
    const report = await verifyAuditChain(db)
    assert.equal(report.ok, true, report.failure?.message)
    assert.equal(report.from.checkpoint, true)
    assert.equal(report.from.seq, String(firstSeq + 7n))
    // The rows left: those not yet pruned, and the two records of the pruning, sealed after them.
    const left = await sealedRows(db)
    assert.equal(left.filter((r) => r.action === 'audit:pruned').length, 2)
    assert.equal(BigInt(left[0]!.seq!), firstSeq + 8n)
  })

  it('names a stretch of removed rows by its first and last seq', async () => {
    await recordAndSeal(100, 5)
    const rows = await sealedRows(db)
    const [a, b] = rows.slice(-4, -2)
    await remove(db, [a!.id, b!.id])
    const report = await verifyAuditChain(db)
    assert.equal(report.ok, false)
    assert.equal(report.failure?.reason, 'missing-rows')
    assert.match(report.failure?.message ?? '', new RegExp(`^rows ${a!.seq}–${b!.seq} are missing`))
    await assert.rejects(pruneAudit(db, { before: new Date(Date.now() + 60_000) }), broken(/are missing/))
    await restore(db, [a!.id, b!.id])
  })

  it('refuses to prune up to rows that were removed just before the cutoff', async () => {
    assert.equal((await verifyAuditChain(db)).ok, true, 'the chain holds again')
    await recordAndSeal(200, 4)
    const rows = await sealedRows(db)
    // Keep the newest row; the two before it are gone: pruning up to it would hide their loss.
    const keep = rows.at(-1)!
    const [x, y] = rows.slice(-3, -1)
    await remove(db, [x!.id, y!.id])
    await assert.rejects(
      pruneAudit(db, { before: keep.at }),
      broken(new RegExp(`audit rows ${x!.seq}–${y!.seq} are missing`)),
    )
    await restore(db, [x!.id, y!.id])
    assert.equal((await verifyAuditChain(db)).ok, true)
  })

  // Rows deleted behind the database's back (triggers off), and put back exactly as they were.
  const removed = new Map<string, unknown>()
  async function remove(db: Kysely<PlinthTables>, ids: readonly (string | number)[]) {
    const rows = await db.selectFrom('audit_log').selectAll().where('id', 'in', ids.map(String)).execute()
    for (const row of rows) removed.set(String(row.id), { ...row, at: row.at.toISOString() })
    await bypassingTriggers(db, (trx) =>
      trx.deleteFrom('audit_log').where('id', 'in', ids.map(String)).execute(),
    )
  }
  async function restore(db: Kysely<PlinthTables>, ids: readonly (string | number)[]) {
    for (const id of ids) {
      const row = removed.get(String(id))
      assert.ok(row, `row ${id} was saved before it was removed`)
      await bypassingTriggers(db, (trx) =>
        sql`insert into audit_log overriding system value select * from json_populate_record(null::audit_log, ${JSON.stringify(row)})`.execute(
          trx,
        ),
      )
    }
  }
})
