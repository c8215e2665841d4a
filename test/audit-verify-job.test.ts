import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { sql } from 'kysely'
import {
  AUDIT_VERIFICATION_FAILED_EVENT,
  AUDIT_VERIFY_JOB,
  AUDIT_VERIFY_SCHEDULE,
} from '../src/modules/audit/audit.module.ts'
import { auditVerifySchedules } from '../src/modules/audit/audit-verify-job.ts'
import { bearer, createUser, NO_RATE_LIMITS, type Session, uniqueEmail } from './helpers/accounts.ts'
import { bypassingTriggers } from './helpers/bypass-triggers.ts'
import { testConfig } from './helpers/test-config.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'
import { waitFor } from './helpers/wait-for.ts'
import { startReceiver } from './helpers/webhook-receiver.ts'

// The built-in plinth.audit-verify job: verifies the audit hash chain as `plinth audit verify`
// does, and says so on the metrics (what PlinthAuditVerificationFailed reads) and, when the chain
// is broken, with the audit.verification_failed event.

/** A sample of /api/metrics (unlabelled), or undefined when absent. */
async function sample(plinth: TestPlinth, name: string): Promise<number | undefined> {
  const text = (await plinth.app.inject({ method: 'GET', url: '/api/metrics' })).body
  const line = text.split('\n').find((l) => l.startsWith(`${name} `))
  return line === undefined ? undefined : Number(line.slice(name.length + 1))
}

describe('the audit verification job', () => {
  let plinth: TestPlinth
  let admin: Session
  let receiver: Awaited<ReturnType<typeof startReceiver>>

  async function runJob() {
    const res = await plinth.app.inject({
      method: 'POST',
      url: `/api/v1/jobs/${AUDIT_VERIFY_JOB}`,
      headers: bearer(admin.token),
      payload: { payload: {} },
    })
    assert.equal(res.statusCode, 202, res.body)
    const href = `/api/v1/jobs/${res.json().id}`
    return waitFor(
      `job ${href} to finish`,
      async () => {
        const j = (await plinth.app.inject({ method: 'GET', url: href, headers: bearer(admin.token) })).json()
        return ['completed', 'failed'].includes(j.state) ? j : false
      },
      { timeoutMs: 60_000, intervalMs: 100 },
    )
  }

  before(async () => {
    receiver = await startReceiver()
    plinth = await startTestPlinth({
      env: {
        ...NO_RATE_LIMITS,
        PLINTH_WEBHOOKS_ALLOW_PRIVATE: 'true',
        PLINTH_AUDIT_VERIFY_CRON: '17 2 * * *',
      },
    })
    admin = await createUser(plinth, uniqueEmail('admin'), 'admin')
    const hook = await plinth.app.inject({
      method: 'POST',
      url: '/api/v1/webhooks',
      headers: bearer(admin.token),
      payload: { url: receiver.url('/alerts'), eventTypes: [AUDIT_VERIFICATION_FAILED_EVENT] },
    })
    assert.equal(hook.statusCode, 201, hook.body)
  })
  after(async () => {
    await plinth?.close()
    await receiver?.close()
  })

  it('declares the built-in schedule on PLINTH_AUDIT_VERIFY_CRON', async () => {
    const schedule = await waitFor(
      'the built-in audit verification schedule',
      async () => (await plinth.context.schedules.list()).find((s) => s.jobName === AUDIT_VERIFY_JOB),
      { timeoutMs: 60_000 },
    )
    assert.equal(schedule.cron, '17 2 * * *')
  })

  it('reports both metrics from the first scrape, before any verification', async () => {
    assert.equal(await sample(plinth, 'plinth_audit_verification_failures_total'), 0)
    assert.equal(await sample(plinth, 'plinth_audit_last_verification_timestamp_seconds'), 0)
  })

  it('leaves the failure counter at 0 on an intact chain, and records when it verified', async () => {
    await plinth.context.audit.seal()
    const startedAt = Date.now() / 1000
    const job = await runJob()
    assert.equal(job.state, 'completed', JSON.stringify(job))
    assert.equal(await sample(plinth, 'plinth_audit_verification_failures_total'), 0)
    const at = await sample(plinth, 'plinth_audit_last_verification_timestamp_seconds')
    assert.ok(at !== undefined && at >= Math.floor(startedAt), `timestamp ${at}`)
    assert.equal(receiver.of('/alerts').length, 0, 'no event for an intact chain')
  })

  it('counts a tampered chain, emits audit.verification_failed and fails the job', async () => {
    await plinth.context.audit.seal()
    const rows = await plinth.db.kysely
      .selectFrom('audit_log')
      .selectAll()
      .where('seq', 'is not', null)
      .orderBy(sql`seq::bigint`)
      .execute()
    assert.ok(rows.length >= 2, 'sealed audit rows to tamper with')
    const victim = rows[1]!
    await bypassingTriggers(plinth.db.kysely, (trx) =>
      sql`update audit_log set details = '{"forged":true}' where id = ${victim.id}`.execute(trx),
    )

    const job = await runJob()
    assert.equal(job.state, 'failed')
    assert.match(JSON.stringify(job.lastError), new RegExp(`seq ${victim.seq}`))
    assert.equal(await sample(plinth, 'plinth_audit_verification_failures_total'), 1)

    const delivery = await waitFor('the alert webhook', () => receiver.of('/alerts')[0], {
      timeoutMs: 30_000,
    })
    const event = JSON.parse(delivery.raw.toString('utf8'))
    assert.equal(event.type, AUDIT_VERIFICATION_FAILED_EVENT)
    assert.equal(event.data.failure.seq, victim.seq)
    assert.equal(event.data.failure.id, String(victim.id))
    assert.equal(event.data.failure.reason, 'hash-mismatch')

    // Each run that finds the chain still broken counts again (the alert reads increase()).
    assert.equal((await runJob()).state, 'failed')
    assert.equal(await sample(plinth, 'plinth_audit_verification_failures_total'), 2)
  })
})

describe('the audit verification schedule', () => {
  it('runs daily by default, on PLINTH_AUDIT_VERIFY_CRON, and not at all with off', () => {
    const [daily] = auditVerifySchedules(testConfig({ PLINTH_AUDIT_VERIFY_CRON: undefined }))
    assert.equal(daily?.id, AUDIT_VERIFY_SCHEDULE)
    assert.equal(daily?.input.jobName, AUDIT_VERIFY_JOB)
    assert.match(daily!.input.cron, /^\d+ \d+ \* \* \*$/)
    assert.equal(
      auditVerifySchedules(testConfig({ PLINTH_AUDIT_VERIFY_CRON: '5 * * * *' }))[0]?.input.cron,
      '5 * * * *',
    )
    assert.deepEqual(auditVerifySchedules(testConfig({ PLINTH_AUDIT_VERIFY_CRON: 'off' })), [])
  })
})
