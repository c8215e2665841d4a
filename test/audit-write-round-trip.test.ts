import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { type Kysely, sql } from 'kysely'
import type { AuditEntry } from '../src/core/audit.ts'
import type { PlinthTables } from '../src/infra/db/tables.ts'
import { verifyAuditChain } from '../src/modules/audit/audit-chain.ts'
import { bypassingTriggers } from './helpers/bypass-triggers.ts'
import { skipUnlessPostgres } from './helpers/services.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'

/**
 * An audit row recorded in its change's transaction is, on PostgreSQL, sent with the transaction's
 * next statement (its COMMIT, usually) instead of on its own (decision 0038). Whatever the backend,
 * the row exists iff its change committed, later statements of the transaction see it, a savepoint
 * rolled back takes it away, and the chain over such rows verifies and shows tampering.
 */

const entry = (id: string, extra: Partial<AuditEntry> = {}): AuditEntry => ({
  action: 'gadget:changed',
  actor: { type: 'user', id: 'user-1' },
  target: { type: 'gadget', id },
  outcome: 'success',
  changes: { before: { n: 0 }, after: { n: 1 } },
  ...extra,
})

for (const backend of ['embedded', 'postgres'] as const) {
  describe(`audit rows written with their change on ${backend}`, {
    skip: backend === 'postgres' ? await skipUnlessPostgres() : false,
  }, () => {
    let plinth: TestPlinth
    let db: Kysely<PlinthTables>

    const gadgets = async () =>
      (await sql<{ id: string }>`select id from gadgets order by id`.execute(db)).rows.map((r) => r.id)
    const audited = async () =>
      (
        await db
          .selectFrom('audit_log')
          .select('target_id')
          .where('action', 'in', ['gadget:changed', 'gadget:refused'])
          .orderBy('id')
          .execute()
      ).map((r) => r.target_id)
    const change = (trx: Kysely<PlinthTables>, id: string) =>
      sql`insert into gadgets (id) values (${id})`.execute(trx)

    before(async () => {
      plinth = await startTestPlinth({ backend })
      db = plinth.db.kysely
      await sql`create table gadgets (id text primary key)`.execute(db)
      // The test's own refusal: an audit row the database will not take (a check it adds here).
      await sql`alter table audit_log add constraint test_refused check (action <> 'gadget:refused')`.execute(
        db,
      )
    })
    after(() => plinth?.close())

    it('commits the change and its row together; later statements of the transaction see the row', async () => {
      await db.transaction().execute(async (trx) => {
        await change(trx, 'a')
        await plinth.context.audit.record(trx, entry('a'))
        const { rows } = await sql<{ n: number }>`
          select count(*)::int as n from audit_log where target_id = 'a'`.execute(trx)
        assert.equal(rows[0]!.n, 1)
      })
      await db.transaction().execute(async (trx) => {
        await change(trx, 'b')
        await plinth.context.audit.record(trx, entry('b'))
      })
      assert.deepEqual(await gadgets(), ['a', 'b'])
      assert.deepEqual(await audited(), ['a', 'b'])
    })

    it('rolls both back: a change that fails after its row, and a row the database refuses', async () => {
      await assert.rejects(
        db.transaction().execute(async (trx) => {
          await change(trx, 'c')
          await plinth.context.audit.record(trx, entry('c'))
          throw new Error('the change fails after its audit row')
        }),
        /the change fails/,
      )
      // Refused: on PostgreSQL the refusal comes with the COMMIT (the row was sent with it), on the
      // embedded database from `record` itself; the transaction fails either way.
      await assert.rejects(
        db.transaction().execute(async (trx) => {
          await change(trx, 'd')
          await plinth.context.audit.record(trx, entry('d', { action: 'gadget:refused' }))
        }),
        (err: { code?: string; message?: string }) =>
          err.code === '23514' && /test_refused/.test(err.message!),
      )
      // …or with the statement after it.
      await assert.rejects(
        db.transaction().execute(async (trx) => {
          await change(trx, 'e')
          await plinth.context.audit.record(trx, entry('e', { action: 'gadget:refused' }))
          await change(trx, 'e2')
        }),
        (err: { code?: string }) => err.code === '23514',
      )
      assert.deepEqual(await gadgets(), ['a', 'b'])
      assert.deepEqual(await audited(), ['a', 'b'])
    })

    it('loses the row with a savepoint rolled back, keeping the rest of the transaction', async () => {
      await db.transaction().execute(async (trx) => {
        await change(trx, 'f')
        await plinth.context.audit.record(trx, entry('f'))
        await sql`savepoint tentative`.execute(trx)
        await change(trx, 'g')
        await plinth.context.audit.record(trx, entry('g'))
        await sql`rollback to savepoint tentative`.execute(trx)
      })
      assert.deepEqual(await gadgets(), ['a', 'b', 'f'])
      assert.deepEqual(await audited(), ['a', 'b', 'f'])
    })

    it('chains the rows of many concurrent changes, one per commit, and shows a row changed afterwards', async () => {
      const outcomes = await Promise.allSettled(
        Array.from({ length: 30 }, (_, i) =>
          db.transaction().execute(async (trx) => {
            await change(trx, `m${String(i).padStart(2, '0')}`)
            await plinth.context.audit.record(
              trx,
              entry(`m${String(i).padStart(2, '0')}`, i % 7 === 3 ? { action: 'gadget:refused' } : {}),
            )
          }),
        ),
      )
      const committed = outcomes.filter((o) => o.status === 'fulfilled').length
      assert.equal(committed, 30 - 4)
      const many = (await gadgets()).filter((id) => id.startsWith('m'))
      assert.equal(many.length, committed)
      assert.deepEqual((await audited()).filter((id) => id!.startsWith('m')).sort(), many)
      await plinth.context.audit.seal()
      const report = await verifyAuditChain(db)
      assert.equal(report.ok, true, report.failure?.message)
      assert.equal(report.unsealed, 0)
      const { rows } = await sql<{ n: number }>`select count(*)::int as n from audit_log`.execute(db)
      assert.equal(report.checked, rows[0]!.n)

      // Tamper-evident as ever: a sealed row changed behind the database's back is named.
      const victim = await db
        .selectFrom('audit_log')
        .select(['id', 'seq'])
        .where('target_id', '=', many[5]!)
        .executeTakeFirstOrThrow()
      await bypassingTriggers(db, (trx) =>
        sql`update audit_log set changes = '{"before":{"n":0},"after":{"n":2}}' where id = ${victim.id}`.execute(
          trx,
        ),
      )
      const broken = await verifyAuditChain(db)
      assert.equal(broken.ok, false)
      assert.equal(broken.failure?.reason, 'hash-mismatch')
      assert.equal(broken.failure?.seq, victim.seq)
    })
  })
}
