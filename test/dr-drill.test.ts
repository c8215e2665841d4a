import assert from 'node:assert/strict'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { sql } from 'kysely'
import { reverifySample } from '../src/modules/backups/backup-job.ts'
import { backupServiceOf } from '../src/modules/backups/backups.module.ts'
import { bearer, createUser, NO_RATE_LIMITS, type Session, uniqueEmail } from './helpers/accounts.ts'
import { assertProblem } from './helpers/assert-problem.ts'
import { runCliWithEnv as cli } from './helpers/run-cli.ts'
import { skipUnlessPostgres } from './helpers/services.ts'
import { TEST_MASTER_KEY } from './helpers/test-config.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'
import { waitFor } from './helpers/wait-for.ts'
import { startReceiver } from './helpers/webhook-receiver.ts'

const skip = await skipUnlessPostgres()

async function jobDone(plinth: TestPlinth, token: string, href: string) {
  return waitFor(
    `job ${href} to finish`,
    async () => {
      const j = (await plinth.app.inject({ method: 'GET', url: href, headers: bearer(token) })).json()
      return ['completed', 'failed'].includes(j.state) ? j : false
    },
    { timeoutMs: 120_000, intervalMs: 100 },
  )
}

describe('disaster-recovery drills on a PostgreSQL server', { skip }, () => {
  let plinth: TestPlinth
  let dir: string
  let admin: Session
  let cliEnv: Record<string, string>

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'plinth-dr-'))
    const env = {
      ...NO_RATE_LIMITS,
      PLINTH_WEBHOOKS_ALLOW_PRIVATE: 'true',
      PLINTH_BACKUP_DIR: dir,
      PLINTH_MASTER_KEY: TEST_MASTER_KEY,
    }
    plinth = await startTestPlinth({ backend: 'postgres', env })
    admin = await createUser(plinth, uniqueEmail('admin'), 'admin')
    cliEnv = {
      ...env,
      DATABASE_URL: plinth.config.databaseUrl!,
      PLINTH_ENV: 'test',
      PLINTH_LOG_LEVEL: 'silent',
    }
  })
  after(async () => {
    await plinth?.close()
    rmSync(dir, { recursive: true, force: true })
  })

  it('refuses a drill while there is no backup', async () => {
    const r = await cli(['dr', 'drill'], cliEnv)
    assert.equal(r.code, 1)
    assert.match(r.err, /PLINTH_DRILL_NO_BACKUP/)
  })

  it('POST /admin/backups/drills runs a drill as a job; the report (RTO, RPO, checks) is stored and listed', async () => {
    const backup = await backupServiceOf(plinth.context).create()
    const res = await plinth.app.inject({
      method: 'POST',
      url: '/api/v1/admin/backups/drills',
      headers: bearer(admin.token),
    })
    assert.equal(res.statusCode, 202, res.body)
    const job = await jobDone(plinth, admin.token, res.json().job.href)
    assert.equal(job.state, 'completed', JSON.stringify(job.lastError))

    const list = await plinth.app.inject({
      method: 'GET',
      url: '/api/v1/admin/backups/drills',
      headers: bearer(admin.token),
    })
    assert.equal(list.statusCode, 200)
    const [report] = list.json().drills
    assert.equal(report.id, job.output.drill)
    assert.equal(report.ok, true, JSON.stringify(report.checks))
    assert.equal(report.backupId, backup.id)
    // The backup predates every canary: the RPO falls back to its age, measured from the disaster canary.
    assert.equal(report.rpoBasis, 'backup-age')
    assert.equal(report.canaries.lastRecoveredAt, null)
    assert.equal(report.canaries.recovered, 0)
    assert.ok(report.rtoSeconds > 0 && report.rtoSeconds < 300, `RTO ${report.rtoSeconds}`)
    assert.ok(report.rpoSeconds >= 0)
    assert.deepEqual(report.targets, { rtoSeconds: 300, rpoSeconds: 60 })
    // Run as a job, the drill brings a Plinth up on the copy too (plinth start in a child process,
    // through ctx.instances): RTO runs to its /ready 200, as with plinth dr drill.
    assert.equal(report.rtoBasis, 'ready')
    assert.equal(report.ready.reached, true, report.ready.detail)
    assert.match(report.ready.detail, /^http:\/\/127\.0\.0\.1:\d+\/ready answered 200$/)
    assert.equal(report.ready.seconds, report.rtoSeconds)
    assert.ok(report.rtoSeconds > report.restoreSeconds)
    assert.deepEqual(
      report.checks.map((c: { name: string }) => c.name),
      [
        'restore',
        'ready',
        'manifest',
        'archive',
        'migration-head',
        'row-counts',
        'audit-chain',
        'migrations-current',
      ],
    )
    const one = await plinth.app.inject({
      method: 'GET',
      url: `/api/v1/admin/backups/drills/${report.id}`,
      headers: bearer(admin.token),
    })
    assert.deepEqual(one.json(), report)
    // A body the drill does not know is refused before anything is enqueued.
    assertProblem(
      await plinth.app.inject({
        method: 'POST',
        url: '/api/v1/admin/backups/drills',
        headers: bearer(admin.token),
        payload: { fresh: 'yes', target: 'prod' },
      }),
      422,
      'PLINTH_HTTP_VALIDATION_FAILED',
    )
    assertProblem(
      await plinth.app.inject({
        method: 'GET',
        url: '/api/v1/admin/backups/drills/20200101T000000Z-00000000',
        headers: bearer(admin.token),
      }),
      404,
      'PLINTH_DRILL_NOT_FOUND',
    )

    await plinth.context.audit.seal()
    const { rows } = await sql<{ outcome: string }>`
      select outcome from audit_log where action = 'backup:drilled' and target_id = ${backup.id}`.execute(
      plinth.db.kysely,
    )
    assert.deepEqual(rows, [{ outcome: 'success' }])
  })

  it('plinth dr drill --fresh: canary, backup, canary; restore, a Plinth on the copy answers /ready; RTO and RPO measured', async () => {
    const newestBefore = (await backupServiceOf(plinth.context).list())[0]!.id
    const r = await cli(['dr', 'drill', '--fresh', '--json'], cliEnv)
    assert.equal(r.code, 0, r.err)
    const report = JSON.parse(r.out)
    assert.equal(report.ok, true, JSON.stringify(report.checks))
    assert.equal(report.freshBackup, true)
    assert.notEqual(report.backupId, newestBefore)
    // RTO: start of the restore → /ready 200 on the restored copy, which takes longer than the restore.
    assert.equal(report.rtoBasis, 'ready')
    assert.equal(report.ready.reached, true, report.ready.detail)
    assert.equal(report.ready.seconds, report.rtoSeconds)
    assert.ok(report.rtoSeconds > report.restoreSeconds, `${report.rtoSeconds} > ${report.restoreSeconds}`)
    assert.ok(report.rtoSeconds < 300 && report.meetsTargets.rto)
    assert.deepEqual(
      report.checks.slice(0, 2).map((c: { name: string; ok: boolean }) => [c.name, c.ok]),
      [
        ['restore', true],
        ['ready', true],
      ],
    )
    // RPO from the canaries: the one written before the backup is recovered, the disaster one is not.
    assert.equal(report.rpoBasis, 'canaries')
    const committed = Date.parse(report.canaries.lastCommittedAt)
    const recovered = Date.parse(report.canaries.lastRecoveredAt)
    assert.ok(report.canaries.recovered >= 1)
    assert.ok(
      recovered < committed,
      `${report.canaries.lastRecoveredAt} < ${report.canaries.lastCommittedAt}`,
    )
    assert.ok(report.rpoSeconds >= 0 && report.rpoSeconds < 60, `RPO ${report.rpoSeconds}`)
    assert.ok(Math.abs(report.rpoSeconds - (committed - recovered) / 1000) < 0.002)
    const manifest = (await backupServiceOf(plinth.context).show(report.backupId)).manifest!
    assert.ok(recovered <= Date.parse(manifest.finishedAt), 'the recovered canary is inside the backup')
    // The live database holds both canaries of this drill; the scratch database is gone.
    const { rows } = await sql<{ n: number }>`
      select count(*)::int as n from backup_canaries where drill = ${report.id}`.execute(plinth.db.kysely)
    assert.deepEqual(rows, [{ n: 2 }])
    const scratch = await sql<{ n: number }>`
      select count(*)::int as n from pg_stat_activity where datname like 'plinth_verify_%'
        and application_name = 'plinth-backup'`.execute(plinth.db.kysely)
    assert.equal(scratch.rows[0]!.n, 0)

    const text = await cli(['dr', 'list'], cliEnv)
    assert.equal(text.code, 0, text.err)
    assert.equal(text.out.trim().split('\n').length, 2)
    assert.match(text.out, new RegExp(`${report.id}\\s+passed.*RTO [0-9.]+ s \\(ready\\).*\\(canaries\\)`))
    console.log(
      `drill ${report.id}: RTO ${report.rtoSeconds} s (restore ${report.restoreSeconds} s), RPO ${report.rpoSeconds} s`,
    )
  })

  it('re-verification of a sample finds a backup damaged in its target: event, metric, failed job', async () => {
    const receiver = await startReceiver()
    try {
      const hook = await plinth.app.inject({
        method: 'POST',
        url: '/api/v1/webhooks',
        headers: bearer(admin.token),
        payload: { url: receiver.url('/alerts'), eventTypes: ['backup.verification_failed'] },
      })
      assert.equal(hook.statusCode, 201, hook.body)
      const service = backupServiceOf(plinth.context)
      const damaged = await service.create()
      await service.verify(damaged.id)
      assert.equal((await service.show(damaged.id)).status, 'verified')
      // Rot in the target after the backup verified: one byte in the middle of the archive.
      const archive = join(dir, damaged.manifest!.parts[0]!.name)
      const bytes = readFileSync(archive)
      bytes[Math.floor(bytes.length / 2)]! ^= 0xff
      writeFileSync(archive, bytes)

      const res = await plinth.app.inject({
        method: 'POST',
        url: '/api/v1/jobs/plinth.backup-reverify',
        headers: bearer(admin.token),
        payload: { payload: { sample: 10 } },
      })
      assert.equal(res.statusCode, 202, res.body)
      const job = await jobDone(plinth, admin.token, `/api/v1/jobs/${res.json().id}`)
      assert.equal(job.state, 'failed')
      assert.match(JSON.stringify(job.lastError), new RegExp(damaged.id))
      assert.equal((await service.show(damaged.id)).status, 'failed')

      const delivery = await waitFor('the alert webhook', () => receiver.of('/alerts')[0], {
        timeoutMs: 30_000,
      })
      const event = JSON.parse(delivery.raw.toString('utf8'))
      assert.equal(event.type, 'backup.verification_failed')
      assert.equal(event.data.backupId, damaged.id)

      const metrics = await plinth.app.inject({ method: 'GET', url: '/api/metrics' })
      assert.match(metrics.body, /plinth_backup_verification_failures_total\{kind="postgres"\} [1-9]/)
    } finally {
      await receiver.close()
    }
  })
})

describe('reverifySample', () => {
  it('always takes the newest, then others at random, never more than asked', () => {
    assert.deepEqual(reverifySample(['c', 'b', 'a'], 5), ['c', 'b', 'a'])
    const picked = reverifySample(['e', 'd', 'c', 'b', 'a'], 3, () => 0)
    assert.deepEqual(picked, ['e', 'd', 'c'])
    assert.equal(new Set(reverifySample(['e', 'd', 'c', 'b', 'a'], 3)).size, 3)
  })
})

describe('disaster-recovery drills on the embedded database', () => {
  let plinth: TestPlinth
  let dir: string
  let admin: Session

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'plinth-dr-embedded-'))
    plinth = await startTestPlinth({
      backend: 'embedded',
      env: { ...NO_RATE_LIMITS, PLINTH_BACKUP_DIR: dir, PLINTH_MASTER_KEY: TEST_MASTER_KEY },
    })
    admin = await createUser(plinth, uniqueEmail('admin'), 'admin')
  })
  after(async () => {
    await plinth?.close()
    rmSync(dir, { recursive: true, force: true })
  })

  it('POST /admin/backups/drills {fresh: true}: a Plinth on the restored data directory answers /ready; canaries read through its socket', async () => {
    const res = await plinth.app.inject({
      method: 'POST',
      url: '/api/v1/admin/backups/drills',
      headers: bearer(admin.token),
      payload: { fresh: true },
    })
    assert.equal(res.statusCode, 202, res.body)
    const job = await jobDone(plinth, admin.token, res.json().job.href)
    assert.equal(job.state, 'completed', JSON.stringify(job.lastError))
    const report = (
      await plinth.app.inject({
        method: 'GET',
        url: `/api/v1/admin/backups/drills/${job.output.drill}`,
        headers: bearer(admin.token),
      })
    ).json()
    assert.equal(report.ok, true, JSON.stringify(report.checks))
    assert.equal(report.backupKind, 'embedded')
    assert.equal(report.freshBackup, true)
    assert.equal(report.rtoBasis, 'ready')
    assert.equal(report.ready.reached, true, report.ready.detail)
    assert.ok(report.rtoSeconds > report.restoreSeconds)
    // The canary written before the fresh backup was read from the restored copy, as its Plinth serves it.
    assert.equal(report.rpoBasis, 'canaries')
    assert.ok(report.canaries.recovered >= 1)
    assert.ok(Date.parse(report.canaries.lastRecoveredAt) < Date.parse(report.canaries.lastCommittedAt))
    assert.ok(report.rpoSeconds >= 0 && report.rpoSeconds < 60, `RPO ${report.rpoSeconds}`)
    console.log(
      `embedded drill ${report.id} (API job): RTO ${report.rtoSeconds} s (restore ${report.restoreSeconds} s), RPO ${report.rpoSeconds} s`,
    )
  })

  it('ctx.instances reports a Plinth that exits before /ready, with what it logged', async () => {
    const file = join(dir, 'not-a-directory')
    writeFileSync(file, 'x')
    const instance = await plinth.context.instances.launch({ dataDir: file })
    try {
      const r = await instance.waitReady(60_000)
      assert.equal(r.ok, false)
      assert.match(r.detail, /exited \(1\) before http:\/\/127\.0\.0\.1:\d+\/ready answered 200: .+/)
    } finally {
      await instance.stop()
    }
    assert.equal(instance.pid, undefined)
  })
})
