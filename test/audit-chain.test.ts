import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { type Kysely, sql } from 'kysely'
import type { AuditEntry } from '../src/core/audit.ts'
import type { PlinthTables } from '../src/infra/db/tables.ts'
import { createAudit } from '../src/modules/audit/audit.service.ts'
import { pruneAudit, verifyAuditChain } from '../src/modules/audit/audit-chain.ts'
import { GENESIS_HASH } from '../src/modules/audit/audit-hash.ts'
import { createLogger } from '../src/observability/logger.ts'
import { PlinthError } from '../src/shared/errors.ts'
import { bypassingTriggers } from './helpers/bypass-triggers.ts'
import { skipUnlessPostgres } from './helpers/services.ts'
import { spawnCli } from './helpers/spawn-cli.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'

const silent = createLogger({ env: 'test', logLevel: 'silent', logFormat: 'json' })
const entry = (n: number, extra: Partial<AuditEntry> = {}): AuditEntry => ({
  action: 'thing:changed',
  actor: { type: 'user', id: `user-${n}` },
  target: { type: 'thing', id: String(n) },
  outcome: 'success',
  details: { n },
  ...extra,
})

async function rowsOf(db: Kysely<PlinthTables>) {
  return db.selectFrom('audit_log').selectAll().orderBy(sql`seq::bigint nulls last`).orderBy('id').execute()
}

/** The error of a statement the database refuses (42501), whatever wraps it. */
async function refused(what: Promise<unknown>, message: string) {
  await assert.rejects(what, (err: { code?: string; message?: string }) => {
    assert.equal(err.code, '42501', `${message}: ${err.message}`)
    assert.match(err.message ?? '', /append-only/)
    return true
  })
}

for (const backend of ['embedded', 'postgres'] as const) {
  describe(`audit chain on ${backend}`, {
    skip: backend === 'postgres' ? await skipUnlessPostgres() : false,
  }, () => {
    let plinth: TestPlinth
    let db: Kysely<PlinthTables>
    before(async () => {
      plinth = await startTestPlinth({ backend })
      db = plinth.db.kysely
      await sql`create table widgets (id serial primary key, name text not null)`.execute(db)
    })
    after(() => plinth?.close())

    it('commits a change and its audit row together, and rolls both back together', async () => {
      const audit = plinth.context.audit
      await db.transaction().execute(async (trx) => {
        await sql`insert into widgets (name) values ('kept')`.execute(trx)
        await audit.record(
          trx,
          entry(1, { action: 'widget:created', target: { type: 'widget', id: 'kept' } }),
        )
      })
      await assert.rejects(
        db.transaction().execute(async (trx) => {
          await sql`insert into widgets (name) values ('dropped')`.execute(trx)
          await audit.record(
            trx,
            entry(2, { action: 'widget:created', target: { type: 'widget', id: 'dropped' } }),
          )
          throw new Error('the change fails after its audit row was written')
        }),
        /the change fails/,
      )
      // An audit row the database refuses (here: an action that is not noun:verb, past the
      // service's own check) takes the change down with it.
      await assert.rejects(
        db.transaction().execute(async (trx) => {
          await sql`insert into widgets (name) values ('refused')`.execute(trx)
          await sql`insert into audit_log (at, actor_type, action, outcome) values (now(), 'system', 'Not An Action', 'success')`.execute(
            trx,
          )
        }),
        /audit_log_action_check|check constraint/,
      )
      const widgets = await sql<{ name: string }>`select name from widgets order by id`.execute(db)
      assert.deepEqual(
        widgets.rows.map((r) => r.name),
        ['kept'],
      )
      const rows = await db
        .selectFrom('audit_log')
        .select('target_id')
        .where('action', '=', 'widget:created')
        .execute()
      assert.deepEqual(
        rows.map((r) => r.target_id),
        ['kept'],
      )
      await assert.rejects(audit.record(db, entry(3, { action: 'Widget Created' })), TypeError)
    })

    it('refuses, in the database itself, an action that is not noun:verb of 1-64 characters each, and an unknown actor type or outcome', async () => {
      // Raw inserts, past the service's own check: migration 0046 rewrote these refusals for speed
      // (an enum type, and the action pattern without bounded repeats); they must refuse exactly
      // what 0006's did.
      const insert = (action: string, actorType = 'system', outcome = 'success') =>
        db.transaction().execute(async (trx) => {
          await sql`insert into audit_log (at, actor_type, action, outcome)
            values (now(), ${actorType}, ${action}, ${outcome})`.execute(trx)
          throw new Error('kept')
        })
      const accepted = async (action: string) => assert.rejects(insert(action), /^Error: kept$/, action)
      const refusedAction = async (action: string) =>
        assert.rejects(insert(action), /audit_log_action_check/, JSON.stringify(action))
      const n = 'a'.repeat(64)
      for (const ok of ['a:b', 'widget:created', 'a-b_c9:d-e_0', `${n}:${n}`, `a${'0'.repeat(63)}:z`])
        await accepted(ok)
      for (const bad of [
        `${n}a:b`,
        `a:${n}b`,
        `${n}a:${n}`,
        'Not An Action',
        'A:b',
        'a:B',
        '1a:b',
        'a:1b',
        'a:',
        ':a',
        'a',
        'a:b:c',
        'a::b',
        ' a:b',
        'a:b ',
        'é:b',
        'a:bé',
        'a:b\n',
      ])
        await refusedAction(bad)
      for (const [actorType, outcome] of [
        ['robot', 'success'],
        ['User', 'success'],
        ['system', 'maybe'],
        ['system', ''],
      ] as const)
        await assert.rejects(insert('a:b', actorType, outcome), (err: { code?: string }) => {
          assert.equal(err.code, '22P02', `${actorType}/${outcome}`)
          return true
        })
    })

    it('stores what it is given, masking secrets by key and dropping what PostgreSQL cannot hold', async () => {
      await plinth.context.audit.record(db, {
        action: 'setting:updated',
        actor: { type: 'token', id: 'user-9', tokenId: 'token-9' },
        target: { type: 'setting', id: 'smtp' },
        outcome: 'failure',
        ip: '198.51.100.4',
        userAgent: `agent\u0000${'x'.repeat(600)}`,
        requestId: 'req-9',
        details: { note: 'lone \ud800 surrogate and \u0000 NUL', nested: { apiKey: 'k', token: 't' } },
        changes: { before: { smtpPassword: 'old', host: 'a' }, after: { smtpPassword: 'new', host: 'b' } },
      })
      await plinth.context.audit.seal()
      const row = await db
        .selectFrom('audit_log')
        .selectAll()
        .where('action', '=', 'setting:updated')
        .executeTakeFirstOrThrow()
      assert.equal(row.actor_type, 'token')
      assert.equal(row.actor_token_id, 'token-9')
      assert.equal(row.outcome, 'failure')
      assert.equal(row.user_agent?.length, 512)
      assert.ok(!row.user_agent?.includes('\u0000'))
      assert.deepEqual(row.details, {
        note: 'lone \ufffd surrogate and  NUL',
        nested: { apiKey: '[redacted]', token: '[redacted]' },
      })
      assert.deepEqual(row.changes, {
        before: { smtpPassword: '[redacted]', host: 'a' },
        after: { smtpPassword: '[redacted]', host: 'b' },
      })
      assert.ok(row.seq && row.hash && row.prev_hash, 'sealed')
    })

    it('seals committed rows into one gap-free chain that verifies', async () => {
      for (let i = 0; i < 7; i++) await plinth.context.audit.record(db, entry(i))
      // The background sealer may take some of them first (it wakes 100 ms after a record), so
      // what counts is that none is left unsealed afterwards, not how many this call sealed.
      await plinth.context.audit.seal()
      const rows = await rowsOf(db)
      assert.ok(rows.length >= 7)
      let prev = GENESIS_HASH
      rows.forEach((row, i) => {
        assert.equal(row.seq, String(i + 1))
        assert.equal(row.prev_hash, prev)
        assert.match(row.hash ?? '', /^[0-9a-f]{64}$/)
        prev = row.hash!
      })
      const report = await verifyAuditChain(db)
      assert.equal(report.ok, true)
      assert.equal(report.checked, rows.length)
      assert.deepEqual(report.head, { seq: String(rows.length), hash: prev })
      assert.equal(report.unsealed, 0)
      assert.equal(await plinth.context.audit.seal(), 0, 'nothing left to seal')
    })

    it('refuses to update, re-seal, delete or truncate audit rows, and to touch checkpoints', async () => {
      const [first] = await rowsOf(db)
      await refused(
        db.updateTable('audit_log').set({ seq: '99' }).where('id', '=', first!.id).execute(),
        'update',
      )
      await refused(
        sql`update audit_log set details = '{"forged":true}' where id = ${first!.id}`.execute(db),
        'content',
      )
      await refused(
        sql`update audit_log set hash = ${'f'.repeat(64)} where id = ${first!.id}`.execute(db),
        're-seal',
      )
      await refused(db.deleteFrom('audit_log').where('id', '=', first!.id).execute(), 'delete')
      await refused(sql`truncate audit_log`.execute(db), 'truncate')
      // The pruning flag allows deleting sealed rows only, and never a checkpoint change.
      await plinth.context.audit.record(db, entry(50))
      let pruningAnUnsealedRow: Promise<unknown> = Promise.resolve()
      await db
        .transaction()
        .execute(async (trx) => {
          await sql`select set_config('plinth.audit_prune', 'on', true)`.execute(trx)
          pruningAnUnsealedRow = trx.deleteFrom('audit_log').where('seq', 'is', null).execute()
          await pruningAnUnsealedRow
        })
        .catch(() => {})
      await refused(pruningAnUnsealedRow, 'an unsealed row, even while pruning')
      await refused(sql`truncate audit_checkpoints`.execute(db), 'truncate checkpoints')
      await plinth.context.audit.seal()
      assert.equal((await verifyAuditChain(db)).ok, true)
    })

    it('names the first row that was changed, removed or re-linked behind the database’s back', async () => {
      await plinth.context.audit.seal()
      const rows = await rowsOf(db)
      assert.ok(rows.length >= 5)
      const [, second, third, fourth] = rows

      // A changed row: its content no longer matches its hash.
      await bypassingTriggers(db, (trx) =>
        sql`update audit_log set details = '{"n":"forged"}' where id = ${third!.id}`.execute(trx),
      )
      let report = await verifyAuditChain(db)
      assert.equal(report.ok, false)
      assert.equal(report.failure?.seq, third!.seq)
      assert.equal(report.failure?.reason, 'hash-mismatch')
      assert.equal(report.checked, 2)
      assert.equal(report.head, null)
      await bypassingTriggers(db, (trx) =>
        sql`update audit_log set details = ${JSON.stringify(third!.details)} where id = ${third!.id}`.execute(
          trx,
        ),
      )
      assert.equal((await verifyAuditChain(db)).ok, true, 'restored')

      // A forged row that was re-hashed to match its content still breaks the next link.
      const { rowHash } = await import('../src/modules/audit/audit-hash.ts')
      const forged = { ...second!, details: { n: 'forged' } }
      await bypassingTriggers(db, (trx) =>
        sql`update audit_log set details = '{"n":"forged"}', hash = ${rowHash(forged, second!.seq!, second!.prev_hash!)}
            where id = ${second!.id}`.execute(trx),
      )
      report = await verifyAuditChain(db)
      assert.equal(report.failure?.seq, third!.seq)
      assert.equal(report.failure?.reason, 'prev-hash-mismatch')
      await bypassingTriggers(db, (trx) =>
        sql`update audit_log set details = ${JSON.stringify(second!.details)}, hash = ${second!.hash}
            where id = ${second!.id}`.execute(trx),
      )

      // A removed row: the one after it names the gap.
      await bypassingTriggers(db, (trx) => trx.deleteFrom('audit_log').where('id', '=', third!.id).execute())
      report = await verifyAuditChain(db)
      assert.equal(report.failure?.seq, fourth!.seq)
      assert.equal(report.failure?.id, String(fourth!.id))
      assert.equal(report.failure?.reason, 'missing-rows')
      assert.match(report.failure?.message ?? '', new RegExp(`rows ${third!.seq} are missing`))

      // Pruning never runs over a broken chain: the evidence stays.
      await assert.rejects(
        pruneAudit(db, { before: new Date(Date.now() + 60_000) }),
        (err: unknown) => err instanceof PlinthError && err.code === 'PLINTH_AUDIT_CHAIN_BROKEN',
      )
      assert.equal((await rowsOf(db)).length, rows.length - 1)
      await bypassingTriggers(db, (trx) =>
        sql`insert into audit_log overriding system value select * from json_populate_record(null::audit_log, ${JSON.stringify(
          { ...third!, at: third!.at.toISOString() },
        )})`.execute(trx),
      )
      assert.equal((await verifyAuditChain(db)).ok, true, 'restored')
    })

    it('prunes old rows under a checkpoint from which the chain still verifies, and records it', async () => {
      await plinth.context.audit.seal()
      const before = await rowsOf(db)
      const cutoff = new Date(Date.now() + 1000)
      await new Promise((r) => setTimeout(r, 5))
      const result = await pruneAudit(db, { before: cutoff })
      assert.equal(result.pruned, before.length)
      assert.equal(result.checkpoint?.lastSeq, before.at(-1)!.seq)
      assert.equal(result.checkpoint?.lastHash, before.at(-1)!.hash)
      const left = await rowsOf(db)
      assert.deepEqual(
        left.map((r) => [r.action, r.seq]),
        [['audit:pruned', null]],
        'only the record of the pruning is left, not yet sealed',
      )
      assert.deepEqual(left[0]!.details, {
        before: cutoff.toISOString(),
        rows: before.length,
        lastSeq: before.at(-1)!.seq,
      })
      await plinth.context.audit.seal()
      const report = await verifyAuditChain(db)
      assert.equal(report.ok, true)
      assert.equal(report.from.checkpoint, true)
      assert.equal(report.from.seq, before.at(-1)!.seq)
      assert.equal(report.checked, 1)
      assert.equal(
        report.head?.seq,
        String(Number(before.at(-1)!.seq) + 1),
        'seq goes on after the checkpoint',
      )
      assert.deepEqual(await pruneAudit(db, { before: new Date(0) }), { pruned: 0 }, 'nothing that old')

      // A stretch pruned without its checkpoint (deleted behind the database's back) is a gap.
      for (let i = 0; i < 3; i++) await plinth.context.audit.record(db, entry(100 + i))
      await plinth.context.audit.seal()
      const [oldest] = await rowsOf(db)
      await bypassingTriggers(db, (trx) => trx.deleteFrom('audit_log').where('id', '=', oldest!.id).execute())
      const broken = await verifyAuditChain(db)
      assert.equal(broken.failure?.reason, 'missing-rows')
      await bypassingTriggers(db, (trx) =>
        sql`insert into audit_log overriding system value select * from json_populate_record(null::audit_log, ${JSON.stringify(
          { ...oldest!, at: oldest!.at.toISOString() },
        )})`.execute(trx),
      )
      assert.equal((await verifyAuditChain(db)).ok, true)
    })

    it('seals rows left behind by a process that stopped before sealing, once another one starts', async () => {
      // The instance's own sealer would take the rows below on its 2 s sweep, before `next` starts.
      await plinth.context.audit.close()
      // Written by a writer whose sealer never ran (stopped at once, nothing recorded through it).
      const crashed = createAudit({ db, logger: silent })
      await crashed.close()
      for (let i = 0; i < 3; i++) await db.transaction().execute((trx) => crashed.record(trx, entry(200 + i)))
      assert.ok((await verifyAuditChain(db)).unsealed >= 3)
      const next = createAudit({ db, logger: silent })
      next.start()
      try {
        for (let i = 0; i < 50 && (await verifyAuditChain(db)).unsealed > 0; i++)
          await new Promise((r) => setTimeout(r, 20))
        const report = await verifyAuditChain(db)
        assert.equal(report.unsealed, 0)
        assert.equal(report.ok, true)
      } finally {
        await next.close()
      }
    })
  })
}

describe('audit chain under concurrent writers on postgres', { skip: await skipUnlessPostgres() }, () => {
  let plinth: TestPlinth
  before(async () => {
    plinth = await startTestPlinth({ backend: 'postgres', env: { PLINTH_DB_POOL_MAX: '20' } })
  })
  after(() => plinth?.close())

  it('keeps one valid chain with every committed row once, while replicas write and seal at once', async () => {
    const db = plinth.db.kysely
    // Three writers as three replicas would have them, each with its own sealer, on one database.
    const replicas = [
      plinth.context.audit,
      createAudit({ db, logger: silent }),
      createAudit({ db, logger: silent }),
    ]
    for (const r of replicas) r.start()
    let committed = 0
    try {
      await Promise.all(
        Array.from({ length: 120 }, async (_, i) => {
          const replica = replicas[i % replicas.length]!
          try {
            await db.transaction().execute(async (trx) => {
              await replica.record(trx, entry(i, { action: 'race:written' }))
              // Every fifth transaction fails after its row was written: that row must never appear.
              if (i % 5 === 0) throw new Error('rolled back')
              await sql`select pg_sleep(${(i % 7) / 1000})`.execute(trx)
            })
            committed++
          } catch (err) {
            if ((err as Error).message !== 'rolled back') throw err
          }
          // Seal from every replica at once, in the middle of the writes.
          if (i % 10 === 0) await Promise.all(replicas.map((r) => r.seal()))
        }),
      )
      await Promise.all(replicas.map((r) => r.seal()))
    } finally {
      for (const r of replicas.slice(1)) await r.close()
    }
    assert.equal(committed, 96)
    const report = await verifyAuditChain(db)
    assert.equal(report.ok, true, report.failure?.message)
    assert.equal(report.unsealed, 0)
    const rows = await db
      .selectFrom('audit_log')
      .select(['seq', 'target_id'])
      .where('action', '=', 'race:written')
      .execute()
    assert.equal(rows.length, committed)
    assert.equal(new Set(rows.map((r) => r.target_id)).size, committed, 'each committed change once')
    assert.ok(
      rows.every((r) => Number(r.target_id) % 5 !== 0),
      'no rolled-back change',
    )
    const seqs = (await db.selectFrom('audit_log').select('seq').orderBy('seq').execute()).map((r) =>
      Number(r.seq),
    )
    assert.deepEqual(
      seqs,
      seqs.map((_, i) => i + 1),
      'gap-free',
    )
  })
})

describe('plinth audit on postgres', { skip: await skipUnlessPostgres() }, () => {
  let plinth: TestPlinth
  let env: Record<string, string>
  before(async () => {
    plinth = await startTestPlinth({ backend: 'postgres' })
    env = {
      PLINTH_ENV: 'test',
      PLINTH_LOG_LEVEL: 'silent',
      DATABASE_URL: plinth.config.databaseUrl!,
      PLINTH_AUDIT_RETENTION: '1d',
    }
    for (let i = 0; i < 4; i++) await plinth.context.audit.record(plinth.db.kysely, entry(i))
    await plinth.context.audit.seal()
  })
  after(() => plinth?.close())

  it('verify exits 0 with the count and the newest hash, and 1 naming a forged row', async () => {
    let r = await spawnCli(['audit', 'verify'], env)
    assert.equal(r.code, 0, r.err)
    assert.match(r.out, /^audit chain valid: \d+ row\(s\) from the start, newest seq \d+ hash [0-9a-f]{64}$/m)
    const db = plinth.db.kysely
    const [, second] = await rowsOf(db)
    await bypassingTriggers(db, (trx) =>
      sql`update audit_log set outcome = 'failure' where id = ${second!.id}`.execute(trx),
    )
    r = await spawnCli(['audit', 'verify'], env)
    assert.equal(r.code, 1)
    assert.match(
      r.err,
      new RegExp(
        `audit chain BROKEN at row seq ${second!.seq} \\(id ${second!.id}\\): its content does not match its hash`,
      ),
    )
    assert.match(r.err, /1 row\(s\) before it verified/)
    await bypassingTriggers(db, (trx) =>
      sql`update audit_log set outcome = 'success' where id = ${second!.id}`.execute(trx),
    )
  })

  it('export prints NDJSON oldest first, filtered; prune keeps what is younger than the retention', async () => {
    let r = await spawnCli(['audit', 'export', '--action', 'thing:*', '--from', '2000-01-01'], env)
    assert.equal(r.code, 0, r.err)
    const lines = r.out
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { seq: string; action: string })
    assert.ok(lines.length >= 4)
    assert.ok(lines.every((l) => l.action === 'thing:changed'))
    assert.deepEqual(
      lines.map((l) => Number(l.seq)),
      [...lines.map((l) => Number(l.seq))].sort((a, b) => a - b),
    )
    r = await spawnCli(['audit', 'export', '--actor', 'nobody'], env)
    assert.equal(r.out, '')
    r = await spawnCli(['audit', 'prune'], env)
    assert.equal(r.code, 0, r.err)
    assert.match(r.out, /^nothing older than \d{4}-\d\d-\d\dT/)
    r = await spawnCli(['audit', 'verify'], env)
    assert.equal(r.code, 0, r.err)
  })

  it('refuses wrong arguments with the usage (exit 2)', async () => {
    for (const [argv, pattern] of [
      [['audit'], /missing action/],
      [['audit', 'rewrite'], /unknown action "rewrite"/],
      [['audit', 'verify', '--from', '2020-01-01'], /--from goes with "export", not "verify"/],
      [['audit', 'export', '--from', 'yesterday'], /--from needs a time/],
      [['audit', 'export', '--outcome', 'maybe'], /--outcome must be one of success, failure/],
      [['audit', 'export', '--action', 'DROP TABLE'], /--action looks like/],
    ] as const) {
      const r = await spawnCli([...argv], env)
      assert.equal(r.code, 2, `${argv.join(' ')}: ${r.err}`)
      assert.match(r.err, pattern)
      assert.match(r.err, /Usage: plinth audit/)
    }
  })
})
