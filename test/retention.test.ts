import assert from 'node:assert/strict'
import { randomBytes, randomUUID } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { type Kysely, sql } from 'kysely'
import type { PlinthTables } from '../src/infra/db/tables.ts'
import { runCli } from '../src/main.ts'
import { auditRetention } from '../src/modules/audit/audit.retention.ts'
import { verifyAuditChain } from '../src/modules/audit/audit-chain.ts'
import { RETENTION_JOB, RETENTION_SCHEDULE } from '../src/modules/jobs/retention-job.ts'
import { waitFor } from './helpers/accounts.ts'
import { skipUnlessPostgres } from './helpers/services.ts'
import { TEST_MASTER_KEY, testConfig } from './helpers/test-config.ts'
import { createTestDatabase, type TestDatabase } from './helpers/test-database.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'

type Db = Kysely<PlinthTables>
const MINUTE = 60_000
const HOUR = 60 * MINUTE
const DAY = 24 * HOUR
const ago = (ms: number) => new Date(Date.now() - ms)
const ahead = (ms: number) => new Date(Date.now() + ms)
const hash = () => randomBytes(16).toString('hex')

/** Tables with rows retention deletes, and the rule that deletes each. */
const TABLES = {
  sessions: 'accounts.sessions',
  api_tokens: 'accounts.api-tokens',
  login_challenges: 'accounts.login-challenges',
  password_reset_tokens: 'accounts.password-reset-tokens',
  invites: 'accounts.invites',
  mail_outbox: 'mail.outbox',
  webhook_deliveries: 'webhooks.deliveries',
  incidents: 'alerts.incidents',
  error_groups: 'errors.groups',
  import_checkpoints: 'imports.checkpoints',
} as const
type Table = keyof typeof TABLES

interface Seeded {
  /** Ids retention must delete, by table. */
  readonly gone: Record<Table, string[]>
  /** Ids it must leave alone. */
  readonly kept: Record<Table, string[]>
}

/**
 * For every rule, rows just past its period (or past it by one of several routes) and rows just
 * inside it, with the default periods: 30d for ended sessions, tokens and e-mail and webhook
 * deliveries, a day for used or expired single-use rows. `mailBacklog` more old e-mails make the
 * outbox rule loop over several batches.
 */
async function seed(db: Db, mailBacklog = 0): Promise<Seeded> {
  const gone = Object.fromEntries(Object.keys(TABLES).map((t) => [t, []])) as unknown as Record<
    Table,
    string[]
  >
  const kept = Object.fromEntries(Object.keys(TABLES).map((t) => [t, []])) as unknown as Record<
    Table,
    string[]
  >
  const email = `retention-${randomUUID()}@example.com`
  const user = await db
    .insertInto('users')
    .values({ email, email_normalized: email, password_hash: null, role: 'member' })
    .returning('id')
    .executeTakeFirstOrThrow()
  const add = (into: Record<Table, string[]>, table: Table) => (row: { id: string }) =>
    into[table].push(row.id)

  const session = (values: { expires_at: Date; last_seen_at: Date; revoked_at?: Date }) =>
    db
      .insertInto('sessions')
      .values({ user_id: user.id, token_hash: hash(), created_at: ago(45 * DAY), ...values })
      .returning('id')
      .executeTakeFirstOrThrow()
  // expired 31 days ago; revoked 31 days ago; idle since 31 days and 30 minutes ago
  add(gone, 'sessions')(await session({ expires_at: ago(31 * DAY), last_seen_at: ago(32 * DAY) }))
  add(
    gone,
    'sessions',
  )(await session({ expires_at: ahead(HOUR), last_seen_at: ago(MINUTE), revoked_at: ago(31 * DAY) }))
  add(gone, 'sessions')(await session({ expires_at: ahead(HOUR), last_seen_at: ago(31 * DAY + 31 * MINUTE) }))
  // ended less than 30 days ago, or live
  add(kept, 'sessions')(await session({ expires_at: ago(29 * DAY), last_seen_at: ago(29 * DAY) }))
  add(
    kept,
    'sessions',
  )(await session({ expires_at: ahead(HOUR), last_seen_at: ago(MINUTE), revoked_at: ago(DAY) }))
  add(kept, 'sessions')(await session({ expires_at: ahead(HOUR), last_seen_at: ago(29 * DAY) }))
  add(kept, 'sessions')(await session({ expires_at: ahead(HOUR), last_seen_at: ago(MINUTE) }))

  const token = (values: { expires_at?: Date | null; revoked_at?: Date }) =>
    db
      .insertInto('api_tokens')
      .values({
        user_id: user.id,
        name: 'ci',
        token_hash: hash(),
        token_hint: 'plt_…',
        scopes: [],
        ...values,
      })
      .returning('id')
      .executeTakeFirstOrThrow()
  add(gone, 'api_tokens')(await token({ revoked_at: ago(31 * DAY) }))
  add(gone, 'api_tokens')(await token({ expires_at: ago(31 * DAY) }))
  add(kept, 'api_tokens')(await token({ revoked_at: ago(29 * DAY) }))
  add(kept, 'api_tokens')(await token({ expires_at: ago(DAY) }))
  add(kept, 'api_tokens')(await token({ expires_at: null }))

  const challenge = (values: { expires_at: Date; completed_at?: Date }) =>
    db
      .insertInto('login_challenges')
      .values({ user_id: user.id, token_hash: hash(), ...values })
      .returning('id')
      .executeTakeFirstOrThrow()
  add(gone, 'login_challenges')(await challenge({ expires_at: ago(25 * HOUR) }))
  add(gone, 'login_challenges')(await challenge({ expires_at: ahead(HOUR), completed_at: ago(25 * HOUR) }))
  add(kept, 'login_challenges')(await challenge({ expires_at: ago(HOUR) }))
  add(kept, 'login_challenges')(await challenge({ expires_at: ahead(5 * MINUTE) }))

  const reset = (values: { expires_at: Date; used_at?: Date }) =>
    db
      .insertInto('password_reset_tokens')
      .values({ user_id: user.id, token_hash: hash(), ...values })
      .returning('id')
      .executeTakeFirstOrThrow()
  add(gone, 'password_reset_tokens')(await reset({ expires_at: ago(3 * DAY) }))
  add(gone, 'password_reset_tokens')(await reset({ expires_at: ahead(HOUR), used_at: ago(2 * DAY) }))
  add(kept, 'password_reset_tokens')(await reset({ expires_at: ahead(HOUR), used_at: ago(HOUR) }))
  add(kept, 'password_reset_tokens')(await reset({ expires_at: ahead(HOUR) }))

  const invite = (values: { expires_at: Date; used_at?: Date }) =>
    db
      .insertInto('invites')
      .values({
        email_normalized: `invitee-${randomUUID()}@example.com`,
        role: 'member',
        token_hash: hash(),
        ...values,
      })
      .returning('id')
      .executeTakeFirstOrThrow()
  add(gone, 'invites')(await invite({ expires_at: ago(5 * DAY) }))
  add(gone, 'invites')(await invite({ expires_at: ahead(DAY), used_at: ago(2 * DAY) }))
  add(kept, 'invites')(await invite({ expires_at: ahead(7 * DAY) }))

  const mail = (created_at: Date, status: 'sent' | 'pending' | 'failed' | 'logged') =>
    db
      .insertInto('mail_outbox')
      .values({
        to_address: email,
        subject: 'Reset your password',
        text_body: 'https://x/reset#t',
        status,
        created_at,
      })
      .returning('id')
      .executeTakeFirstOrThrow()
  add(gone, 'mail_outbox')(await mail(ago(31 * DAY), 'sent'))
  add(gone, 'mail_outbox')(await mail(ago(31 * DAY), 'pending'))
  add(kept, 'mail_outbox')(await mail(ago(29 * DAY), 'failed'))
  add(kept, 'mail_outbox')(await mail(ago(MINUTE), 'logged'))
  if (mailBacklog > 0) {
    const rows = await sql<{
      id: string
    }>`insert into mail_outbox (to_address, subject, text_body, status, created_at)
      select ${email}, 'Old', 'old', 'sent', now() - interval '40 days' - make_interval(secs => n)
      from generate_series(1, ${mailBacklog}) as n returning id`.execute(db)
    for (const row of rows.rows) add(gone, 'mail_outbox')(row)
  }

  const subscription = randomUUID()
  await db
    .insertInto('webhook_subscriptions')
    .values({
      id: subscription,
      url: 'https://example.com/hook',
      event_types: ['*'],
      secret: 'unused',
      updated_at: new Date(),
    })
    .execute()
  const delivery = (created_at: Date) =>
    db
      .insertInto('webhook_deliveries')
      .values({
        id: randomUUID(),
        subscription_id: subscription,
        event_id: randomUUID(),
        event_type: 'thing:happened',
        job_id: null,
        attempt: 1,
        status: 'succeeded',
        response_status: 204,
        error: null,
        duration_ms: 12,
        created_at,
      })
      .returning('id')
      .executeTakeFirstOrThrow()
  add(gone, 'webhook_deliveries')(await delivery(ago(31 * DAY)))
  add(kept, 'webhook_deliveries')(await delivery(ago(29 * DAY)))

  // Incidents resolved more than 90 days ago go (their timelines cascade); recent or active stay.
  const incident = (status: 'open' | 'resolved', resolvedAt: Date | null) =>
    db
      .insertInto('incidents')
      .values({
        id: randomUUID(),
        fingerprint: `retention-${randomUUID()}`,
        rule: 'retention-test',
        kind: 'alert',
        severity: 'ticket',
        status,
        summary: 'retention',
        description: 'retention',
        labels: '{}',
        value: null,
        last_seen_at: ago(100 * DAY),
        acknowledged_at: null,
        escalated_at: null,
        resolved_at: resolvedAt,
      })
      .returning('id')
      .executeTakeFirstOrThrow()
  add(gone, 'incidents')(await incident('resolved', ago(91 * DAY)))
  add(kept, 'incidents')(await incident('resolved', ago(89 * DAY)))
  add(kept, 'incidents')(await incident('open', null))
  // Error groups go PLINTH_ERRORS_RETENTION (90 days) after they were last seen, whatever their status.
  const errorGroup = (last_seen: Date, status: 'open' | 'resolved' | 'muted') =>
    db
      .insertInto('error_groups')
      .values({
        fingerprint: hash(),
        source: 'http',
        location: 'GET /api/v1/things/:id',
        error_name: 'TypeError',
        message: 'x is undefined',
        frames: 'load (src/things.ts)',
        count: 3,
        first_seen: ago(200 * DAY),
        last_seen,
        first_version: '0.0.1',
        last_version: '0.0.1',
        status,
      })
      .returning('id')
      .executeTakeFirstOrThrow()
  add(gone, 'error_groups')(await errorGroup(ago(91 * DAY), 'open'))
  add(gone, 'error_groups')(await errorGroup(ago(91 * DAY), 'muted'))
  add(kept, 'error_groups')(await errorGroup(ago(89 * DAY), 'resolved'))
  // Finished imports go PLINTH_IMPORT_RETENTION (90 days) after they were last touched, with their
  // rejected-row reports and any keys a failed one left; a running one stays (it can resume).
  const checkpoint = async (updated_at: Date, status: 'running' | 'complete' | 'failed') => {
    const row = await db
      .insertInto('import_checkpoints')
      .values({
        module: 'demo',
        dataset: 'things',
        file: `/imports/${hash()}.ndjson`,
        dry_run: false,
        format: 'ndjson',
        file_size: 10,
        file_mtime_ms: 1,
        file_head_sha256: hash(),
        header: null,
        byte_offset: 10,
        line: 2,
        rows: 1,
        inserted: 1,
        updated: 0,
        unchanged: 0,
        rejected: 1,
        seen_keys: 1,
        status,
        error: status === 'failed' ? 'stopped' : null,
        started_at: updated_at,
        updated_at,
      })
      .returning('id')
      .executeTakeFirstOrThrow()
    await db
      .insertInto('import_rejections')
      .values({ checkpoint_id: row.id, line: 2, reason: 'bad row' })
      .execute()
    await db.insertInto('import_seen_keys').values({ checkpoint_id: row.id, key_hash: 42, line: 1 }).execute()
    return row
  }
  add(gone, 'import_checkpoints')(await checkpoint(ago(91 * DAY), 'complete'))
  add(gone, 'import_checkpoints')(await checkpoint(ago(91 * DAY), 'failed'))
  add(kept, 'import_checkpoints')(await checkpoint(ago(91 * DAY), 'running'))
  add(kept, 'import_checkpoints')(await checkpoint(ago(89 * DAY), 'complete'))
  return { gone, kept }
}

/** What each rule should report for a seeding (0 for the audit log unless given). */
function expectedCounts(seeded: Seeded, audit = 0): Record<string, number> {
  const counts: Record<string, number> = { 'audit.log': audit }
  for (const [table, rule] of Object.entries(TABLES)) counts[rule] = seeded.gone[table as Table].length
  return counts
}

async function assertApplied(db: Db, seeded: Seeded): Promise<void> {
  for (const table of Object.keys(TABLES) as Table[]) {
    const ids = [...seeded.gone[table], ...seeded.kept[table]]
    const left = await db
      .selectFrom(table)
      .select('id')
      .where('id', 'in', ids)
      .execute()
      .then((rows) => rows.map((r) => r.id).sort())
    assert.deepEqual(left, [...seeded.kept[table]].sort(), `${table}: exactly the expired rows are gone`)
  }
  // An expired import's report and left-over keys went with it; a kept one's stayed.
  const imports = [...seeded.gone.import_checkpoints, ...seeded.kept.import_checkpoints]
  for (const table of ['import_rejections', 'import_seen_keys'] as const) {
    const owners = await db
      .selectFrom(table)
      .select('checkpoint_id')
      .where('checkpoint_id', 'in', imports)
      .execute()
      .then((rows) => rows.map((r) => r.checkpoint_id).sort())
    assert.deepEqual(
      owners,
      [...seeded.kept.import_checkpoints].sort(),
      `${table}: only the kept imports' rows stay`,
    )
  }
}

/** Audit rows `at` days ago, inserted (unsealed) as if recorded then. */
async function oldAuditRows(db: Db, count: number, daysAgo = 401): Promise<void> {
  for (let i = 0; i < count; i++)
    await sql`insert into audit_log (at, actor_type, action, outcome, details)
      values (now() - make_interval(days => ${daysAgo}), 'system', 'thing:happened', 'success', ${JSON.stringify({ i })}::jsonb)`.execute(
      db,
    )
}

async function retentionRuns(db: Db) {
  return db
    .selectFrom('audit_log')
    .select(['actor_type', 'outcome', 'details'])
    .where('action', '=', 'retention:ran')
    .orderBy('id')
    .execute()
}

/** Runs `plinth` in this process with `env` as its environment (restored after). */
async function cli(env: Record<string, string>, ...args: string[]) {
  const saved = Object.fromEntries(Object.keys(env).map((k) => [k, process.env[k]]))
  Object.assign(process.env, env)
  let out = ''
  let err = ''
  try {
    const code = await runCli(args, { out: (t) => (out += `${t}\n`), err: (t) => (err += `${t}\n`) })
    return { code, out, err }
  } finally {
    for (const [k, v] of Object.entries(saved))
      if (v === undefined) delete process.env[k]
      else process.env[k] = v
  }
}

for (const backend of ['embedded', 'postgres'] as const) {
  describe(`retention on ${backend}`, {
    skip: backend === 'postgres' ? await skipUnlessPostgres() : false,
  }, () => {
    let testDb: TestDatabase | undefined
    let plinth: TestPlinth
    let db: Db
    let seeded: Seeded

    before(async () => {
      testDb = backend === 'postgres' ? await createTestDatabase() : undefined
      plinth = await startTestPlinth({
        env: {
          ...(testDb ? { DATABASE_URL: testDb.url, PLINTH_MASTER_KEY: TEST_MASTER_KEY } : {}),
          PLINTH_RETENTION_CRON: '41 2 * * *',
          PLINTH_JOBS_POLL_INTERVAL: '500ms',
        },
        prepare: false,
      })
      db = plinth.db.kysely
      // The old audit rows go in before anything else is recorded: pruning removes the oldest
      // stretch of the chain, up to the first row that is young enough.
      await plinth.db.connect()
      await plinth.migrator.up()
      await oldAuditRows(db, 3)
      await plinth.prepare()
      await plinth.context.audit.seal()
      seeded = await seed(db, 2500)
    })
    after(async () => {
      await plinth?.close()
      await testDb?.drop()
    })

    it('creates its built-in schedule in the worker role, with PLINTH_RETENTION_CRON', async () => {
      const schedule = await plinth.context.schedules.get(RETENTION_SCHEDULE)
      assert.equal(schedule.jobName, RETENTION_JOB)
      assert.equal(schedule.cron, '41 2 * * *')
      assert.equal(schedule.timezone, 'UTC')
      assert.equal(schedule.builtin, true)
      assert.equal(schedule.paused, false)
      assert.ok(await plinth.jobs.boss.getSchedule(RETENTION_JOB, RETENTION_SCHEDULE), 'armed in the engine')
    })

    it('deletes exactly the expired rows when the job runs, counts them, and records one audit row', async () => {
      const { id } = await plinth.jobs.enqueue(RETENTION_JOB, {})
      const job = await waitFor(
        'the retention job',
        async () => {
          const j = await plinth.jobs.get(id)
          return ['completed', 'failed', 'cancelled'].includes(j.state) ? j : undefined
        },
        { timeoutMs: 60_000 },
      )
      assert.equal(job.state, 'completed', job.lastError ?? '')
      const expected = expectedCounts(seeded, 3)
      assert.equal(expected['mail.outbox'], 2502, 'the outbox backlog spans three batches')
      assert.deepEqual(job.output, {
        deleted: Object.values(expected).reduce((a, b) => a + b, 0),
        counts: expected,
      })
      await assertApplied(db, seeded)

      const metrics = await plinth.metrics.registry.getSingleMetricAsString('plinth_retention_deleted_total')
      for (const [rule, n] of Object.entries(expected))
        assert.match(metrics, new RegExp(`plinth_retention_deleted_total\\{rule="${rule}"\\} ${n}(\\n|$)`))
      const runs = await plinth.metrics.registry.getSingleMetricAsString('plinth_retention_runs_total')
      assert.match(runs, /plinth_retention_runs_total\{outcome="success"\} 1(\n|$)/)

      const [ran, ...more] = await retentionRuns(db)
      assert.equal(more.length, 0, 'one audit row per run')
      assert.equal(ran?.actor_type, 'system')
      assert.equal(ran?.outcome, 'success')
      const details = ran?.details as { trigger: string; deleted: number; counts: Record<string, number> }
      assert.equal(details.trigger, 'job')
      assert.deepEqual(details.counts, expected)

      // the old audit rows are gone, the young ones stay, and the chain verifies from the checkpoint
      await plinth.context.audit.seal()
      const old = await db
        .selectFrom('audit_log')
        .select('id')
        .where('action', '=', 'thing:happened')
        .execute()
      assert.equal(old.length, 0)
      const pruned = await db
        .selectFrom('audit_log')
        .select('details')
        .where('action', '=', 'audit:pruned')
        .execute()
      assert.equal(pruned.length, 1)
      const report = await verifyAuditChain(db)
      assert.equal(report.ok, true, report.failure?.message)
      assert.equal(report.from.checkpoint, true)
      assert.equal(report.from.seq, '3')
      assert.equal(report.unsealed, 0)
    })

    it('finds nothing more to delete on the next run', async () => {
      const report = await plinth.retention.run({ trigger: 'test' })
      assert.equal(report.ok, true)
      assert.equal(report.deleted, 0)
      await assertApplied(db, seeded)
    })

    it('stops when its signal aborts, and records the run as a failure', async () => {
      const report = await plinth.retention.run({ signal: AbortSignal.abort(new Error('shutting down')) })
      assert.equal(report.ok, false)
      assert.ok(report.results.every((r) => r.error === 'aborted before it ran' && r.deleted === 0))
      const last = (await retentionRuns(db)).at(-1)
      assert.equal(last?.outcome, 'failure')
      const runs = await plinth.metrics.registry.getSingleMetricAsString('plinth_retention_runs_total')
      assert.match(runs, /plinth_retention_runs_total\{outcome="failure"\} 1(\n|$)/)
    })

    it('plinth retention run deletes the same from the command line and prints the counts', {
      skip:
        backend === 'embedded'
          ? 'the in-memory database is not reachable from the CLI (see the data-directory suite)'
          : false,
    }, async () => {
      const again = await seed(db)
      const r = await cli(
        {
          PLINTH_ENV: 'test',
          DATABASE_URL: testDb!.url,
          PLINTH_LOG_LEVEL: 'silent',
          PLINTH_MASTER_KEY: TEST_MASTER_KEY,
        },
        'retention',
        'run',
      )
      assert.equal(r.code, 0, r.err)
      const expected = expectedCounts(again)
      const total = Object.values(expected).reduce((a, b) => a + b, 0)
      assert.match(r.out, new RegExp(`^retention done: ${total} row\\(s\\) deleted in \\d+ ms\\n`))
      for (const [rule, n] of Object.entries(expected))
        assert.match(r.out, new RegExp(`\\n  ${rule.replace('.', '\\.')} +${n}  `))
      await assertApplied(db, again)
      await assertApplied(db, seeded)
      const last = (await retentionRuns(db)).at(-1)
      assert.equal((last!.details as { trigger: string }).trigger, 'cli')
      assert.deepEqual((last!.details as { counts: unknown }).counts, expected)
    })
  })
}

describe('plinth retention run on an embedded data directory', () => {
  let dir: string
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'plinth-retention-'))
  })
  after(() => rm(dir, { recursive: true, force: true }))

  it('deletes the expired rows and prints the counts (--json)', async () => {
    const env = { PLINTH_ENV: 'test', PLINTH_DATA_DIR: dir, PLINTH_LOG_LEVEL: 'silent' }
    let plinth = await startTestPlinth({ env })
    let seeded: Seeded
    try {
      seeded = await seed(plinth.db.kysely)
    } finally {
      await plinth.close()
    }
    // the server is stopped: only one process may open the data directory
    const r = await cli(env, 'retention', 'run', '--json')
    assert.equal(r.code, 0, r.err)
    const report = JSON.parse(r.out) as { ok: boolean; results: { rule: string; deleted: number }[] }
    assert.equal(report.ok, true)
    assert.deepEqual(
      Object.fromEntries(report.results.map((x) => [x.rule, x.deleted])),
      expectedCounts(seeded),
    )
    plinth = await startTestPlinth({ env })
    try {
      await assertApplied(plinth.db.kysely, seeded)
      const [ran] = await retentionRuns(plinth.db.kysely)
      assert.equal((ran!.details as { trigger: string }).trigger, 'cli')
      assert.equal((await verifyAuditChain(plinth.db.kysely)).ok, true)
    } finally {
      await plinth.close()
    }
  })

  it('refuses an unknown action with the usage (exit 2)', async () => {
    const r = await cli(
      { PLINTH_ENV: 'test', PLINTH_DATA_DIR: dir, PLINTH_LOG_LEVEL: 'silent' },
      'retention',
      'purge',
    )
    assert.equal(r.code, 2)
    assert.match(r.err, /unknown action "purge"/)
    assert.match(r.err, /Usage: plinth retention/)
  })
})

describe('retention on a fresh PostgreSQL database', { skip: await skipUnlessPostgres() }, () => {
  const fresh = async (env: Record<string, string> = {}) => {
    const testDb = await createTestDatabase()
    const plinth = await startTestPlinth({
      env: { DATABASE_URL: testDb.url, PLINTH_MASTER_KEY: TEST_MASTER_KEY, ...env },
      prepare: false,
    })
    return Object.assign(plinth, {
      async done() {
        await plinth.close()
        await testDb.drop()
      },
    })
  }

  it('prunes an audit backlog in stretches, each under its own checkpoint, and the chain still verifies', async () => {
    const plinth = await fresh()
    try {
      const db = plinth.db.kysely
      await plinth.db.connect()
      await plinth.migrator.up()
      await oldAuditRows(db, 5)
      await plinth.prepare()
      await plinth.context.audit.record(db, {
        action: 'thing:happened',
        actor: { type: 'system' },
        outcome: 'success',
      })
      await plinth.context.audit.seal()
      const [rule] = auditRetention(testConfig(), { batch: 2 })
      const batches: number[] = []
      const result = await rule!.run({
        db,
        now: new Date(),
        signal: new AbortController().signal,
        onDeleted: (n) => batches.push(n),
      })
      assert.equal(result.deleted, 5)
      assert.deepEqual(batches, [2, 2, 1])
      const checkpoints = await db
        .selectFrom('audit_checkpoints')
        .select(['last_seq', 'rows_pruned'])
        .orderBy('id')
        .execute()
      assert.deepEqual(
        checkpoints.map((c) => [c.last_seq, String(c.rows_pruned)]),
        [
          ['2', '2'],
          ['4', '2'],
          ['5', '1'],
        ],
      )
      await plinth.context.audit.seal()
      const report = await verifyAuditChain(db)
      assert.equal(report.ok, true, report.failure?.message)
      assert.equal(report.from.seq, '5')
      const left = await db.selectFrom('audit_log').select('action').orderBy('id').execute()
      assert.deepEqual(
        left.map((r) => r.action).filter((a) => a !== 'audit:pruned'),
        ['thing:happened'],
        'the young row stays',
      )
    } finally {
      await plinth.done()
    }
  })

  it('is not scheduled by an api process (which can still enqueue it)', async () => {
    const plinth = await fresh({ PLINTH_ROLE: 'api' })
    try {
      await plinth.prepare()
      assert.deepEqual(await plinth.context.schedules.list(), [])
      assert.equal(plinth.jobs.has(RETENTION_JOB), true)
    } finally {
      await plinth.done()
    }
  })
})
