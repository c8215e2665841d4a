import assert from 'node:assert/strict'
import { chmodSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import pg from 'pg'
import { pino } from 'pino'
import { createBackupMetrics, registerWalLagMetric } from '../src/modules/backups/backup-metrics.ts'
import { archiverState, createPitr, pitrSettingsOf } from '../src/modules/backups/pitr.ts'
import { pitrBackupJob } from '../src/modules/backups/pitr-job.ts'
import { createMetrics } from '../src/observability/metrics.ts'
import { runCliWithEnv as cli } from './helpers/run-cli.ts'
import {
  createSpareCluster,
  type SpareCluster,
  skipUnlessSpareClusters,
  startAndWait,
} from './helpers/spare-cluster.ts'
import { testConfig } from './helpers/test-config.ts'
import { waitFor } from './helpers/wait-for.ts'

const skip = skipUnlessSpareClusters()

async function query<T extends pg.QueryResultRow>(url: string, text: string): Promise<T[]> {
  const c = new pg.Client({ connectionString: url })
  await c.connect()
  try {
    return (await c.query<T>(text)).rows
  } finally {
    await c.end()
  }
}

/**
 * Point-in-time recovery through pgBackRest, end to end: a cluster of its own on a spare port with
 * WAL archiving set up by `plinth pitr setup`, a full backup, canary rows every ~200 ms with a target
 * time noted in the middle, then `plinth pitr restore --to-time` into a second, empty cluster: every
 * canary up to the target is there, none after it.
 */
describe('plinth pitr (pgBackRest)', { skip }, () => {
  let source: SpareCluster
  let restored: SpareCluster
  let dir: string
  let env: Record<string, string>

  before(async () => {
    source = await createSpareCluster('plinth_pitr')
    restored = await createSpareCluster('plinth_pitr_r')
    await startAndWait(source)
    dir = mkdtempSync('/tmp/plinth-pitr-')
    chmodSync(dir, 0o755) // the server's user walks through it to its repository
    env = {
      PLINTH_ENV: 'test',
      PLINTH_LOG_LEVEL: 'silent',
      PLINTH_DATA_DIR: 'memory://',
      DATABASE_URL: source.url(),
      PLINTH_PITR_STANZA: 'plinth',
      PLINTH_PITR_PG_DATA: source.dataDir,
      PLINTH_PITR_PG_PORT: String(source.port),
      PLINTH_PITR_PG_SOCKET: source.socket,
      PLINTH_PITR_REPO_PATH: join(dir, 'pgbackrest'),
      PLINTH_PITR_CIPHER_PASS: 'a-test-passphrase-of-some-length',
      PLINTH_PITR_OS_USER: 'postgres',
      PLINTH_PITR_ARCHIVE_TIMEOUT: '10s',
    }
  })

  after(() => {
    source?.drop()
    restored?.drop()
    if (dir) rmSync(dir, { recursive: true, force: true })
  })

  it('refuses to run without its configuration, naming what is missing', async () => {
    const r = await cli(['pitr', 'status'], { ...env, PLINTH_PITR_CIPHER_PASS: 'short' })
    assert.equal(r.code, 1)
    assert.match(r.err, /PLINTH_PITR_NOT_CONFIGURED/)
    assert.match(r.err, /PLINTH_PITR_CIPHER_PASS/)
  })

  it('sets up archiving, backs up, and restores to a point in time with 0 mismatches', async () => {
    // Before the settings are applied: the SQL to run is printed, and setup is not ready.
    const dry = await cli(['pitr', 'setup', '--json'], env)
    assert.equal(dry.code, 1, dry.err)
    const dryResult = JSON.parse(dry.out)
    assert.equal(dryResult.ready, false)
    assert.ok(
      dryResult.sql.some((l: string) => /archive_command = 'pgbackrest --config=.* archive-push %p'/.test(l)),
    )
    const conf = statSync(dryResult.configPath)
    assert.equal(conf.mode & 0o777, 0o600, 'the configuration holds the passphrase: 0600')

    const applied = await cli(['pitr', 'setup', '--apply', '--json'], env)
    assert.equal(applied.code, 1, applied.err)
    assert.equal(JSON.parse(applied.out).restartNeeded, true, 'archive_mode changes only at a restart')
    source.restart()
    await startAndWait(source)
    const ready = await cli(['pitr', 'setup', '--json'], env)
    assert.equal(ready.code, 0, `${ready.out}\n${ready.err}`)
    assert.equal(JSON.parse(ready.out).ready, true)

    const db = source.url()
    await query(
      db,
      'create table canary (n int primary key, at timestamptz not null default clock_timestamp())',
    )
    const full = await cli(['pitr', 'backup', '--type', 'full', '--json'], env)
    assert.equal(full.code, 0, full.err)
    assert.equal(JSON.parse(full.out).type, 'full')

    // Canary rows every ~200 ms (the workload's own pace), a target time in the middle.
    let n = 0
    const write = async (count: number) => {
      for (let i = 0; i < count; i++) {
        n += 1
        await query(db, `insert into canary (n) values (${n})`)
        await sleep(200)
      }
    }
    await write(8)
    const [row] = await query<{ t: string }>(
      db,
      `select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as t`,
    )
    const targetTime = row!.t
    await write(8)
    const expected = (
      await query<{ n: number }>(db, `select n from canary where at <= '${targetTime}' order by n`)
    ).map((r) => r.n)
    assert.ok(expected.length >= 7 && expected.length <= 9, `${expected.length} canaries before the target`)

    // Everything written so far reaches the repository (the current segment is switched out).
    await query(db, 'select pg_switch_wal()')
    const status = await waitFor(
      'the WAL to be archived (0 pending bytes)',
      async () => {
        const r = await cli(['pitr', 'status', '--json'], env)
        if (r.code !== 0) return false
        const s = JSON.parse(r.out)
        return s.archive.pendingBytes === 0 ? s : false
      },
      { timeoutMs: 60_000, intervalMs: 500 },
    )
    assert.equal(status.archive.lagSeconds, 0)
    // The metrics read the same through a pool (a scrape opens no connection of its own).
    const pool = new pg.Pool({ connectionString: db, max: 1 })
    try {
      assert.equal((await archiverState(pool, new Date())).pendingBytes, 0)
    } finally {
      await pool.end()
    }
    assert.equal(status.lastBackup.type, 'full')
    assert.ok(status.lastBackupAgeSeconds >= 0 && status.lastBackupAgeSeconds < 600)

    const verify = await cli(['pitr', 'verify', '--json'], env)
    assert.equal(verify.code, 0, verify.err)

    // The scheduled job (an incremental backup here, then pgbackrest verify) and the metrics.
    const metrics = createMetrics({ version: 'test', revision: 'test', env: 'test' })
    const backupMetrics = createBackupMetrics(metrics)
    registerWalLagMetric(metrics, async () => (await archiverState(db, new Date())).lagSeconds)
    const pitr = createPitr({ settings: pitrSettingsOf(testConfig(env)), logger: pino({ level: 'silent' }) })
    const job = pitrBackupJob(() => pitr, backupMetrics)
    const output = (await job.handler({
      id: 'test',
      name: job.name,
      payload: { type: 'incr' },
      attempt: 1,
      requestId: undefined,
      scheduleId: undefined,
      signal: new AbortController().signal,
      logger: pino({ level: 'silent' }),
    } as unknown as Parameters<typeof job.handler>[0])) as { type: string }
    assert.equal(output.type, 'incr')
    const text = await metrics.registry.metrics()
    assert.match(text, /^plinth_wal_archive_lag_seconds \d/m)
    assert.match(text, /^plinth_pitr_last_backup_timestamp_seconds \d{10}/m)
    assert.match(text, /^plinth_backup_verifications_total\{kind="pgbackrest",result="ok"\} 1$/m)

    // The restore refuses a non-empty directory, and asks before anything (no terminal: no).
    restored.stop()
    const refused = await cli(
      ['pitr', 'restore', '--to-time', targetTime, '--pg-data', restored.dataDir, '--yes'],
      env,
    )
    assert.equal(refused.code, 1)
    assert.match(refused.err, /PLINTH_BACKUP_TARGET_NOT_EMPTY/)
    for (const f of readdirSync(restored.dataDir)) rmSync(join(restored.dataDir, f), { recursive: true })
    const unconfirmed = await cli(
      ['pitr', 'restore', '--to-time', targetTime, '--pg-data', restored.dataDir],
      env,
    )
    assert.equal(unconfirmed.code, 1)
    assert.match(unconfirmed.err, /not confirmed/)
    assert.deepEqual(readdirSync(restored.dataDir), [])
    const badTarget = await cli(
      ['pitr', 'restore', '--to-time', 'yesterday', '--pg-data', restored.dataDir, '--yes'],
      env,
    )
    assert.equal(badTarget.code, 1)
    assert.match(badTarget.err, /PLINTH_PITR_TARGET_INVALID/)

    const r = await cli(
      ['pitr', 'restore', '--to-time', targetTime, '--pg-data', restored.dataDir, '--yes', '--json'],
      env,
    )
    assert.equal(r.code, 0, r.err)
    assert.equal(JSON.parse(r.out).type, 'time')
    await startAndWait(restored)
    const got = (await query<{ n: number }>(restored.url(), 'select n from canary order by n')).map(
      (x) => x.n,
    )
    assert.deepEqual(got, expected, 'exactly the canaries committed up to the target time')
    const [setting] = await query<{ mode: string }>(
      restored.url(),
      "select current_setting('archive_mode') as mode",
    )
    assert.equal(setting?.mode, 'off', 'the restored server does not archive into the source repository')
  })

  it('pitr verify --restore proves the repository by a real restore: a canary archived, restored into a scratch cluster, read back', async () => {
    // Plinth's tables in the archived database (the canaries live there), and a password on the role
    // (the scratch copy takes the restored roles' passwords over 127.0.0.1).
    await query(source.url(), "alter role postgres password 'pitr-test-pw'")
    const tcp = `postgresql://postgres:pitr-test-pw@127.0.0.1:${source.port}/postgres`
    const migrated = await cli(['migrate', 'up'], { ...env, DATABASE_URL: tcp })
    assert.equal(migrated.code, 0, migrated.err)
    const before = await query<{ n: number }>(tcp, 'select count(*)::int as n from backup_canaries')
    const r = await cli(['pitr', 'verify', '--restore', '--json'], { ...env, DATABASE_URL: tcp })
    assert.equal(r.code, 0, `${r.out}\n${r.err}`)
    const result = JSON.parse(r.out)
    assert.equal(result.ok, true)
    assert.deepEqual(
      result.restore.checks.map((c: { name: string; ok: boolean }) => [c.name, c.ok]),
      [
        ['archived', true],
        ['restore', true],
        ['database', true],
        ['canary', true],
      ],
    )
    assert.match(result.restore.checks[2].detail, /with its migration table/)
    assert.ok(result.restore.restoreMs > 0)
    // The canary was written in the live database; the scratch cluster and its directory are gone.
    const after = await query<{ n: number }>(tcp, 'select count(*)::int as n from backup_canaries')
    assert.equal(after[0]!.n, before[0]!.n + 1)
    assert.deepEqual(readdirSync(join(dir, 'pgbackrest', 'scratch')), [])
    console.log(`pgBackRest restore check: scratch cluster up in ${result.restore.restoreMs} ms`)

    // A restore that cannot start a server fails the check (exit 1), says why, and leaves nothing.
    const broken = await cli(['pitr', 'verify', '--restore', '--json'], {
      ...env,
      DATABASE_URL: tcp,
      PLINTH_PITR_PG_BIN: '/nonexistent/bin',
    })
    assert.equal(broken.code, 1, broken.err)
    const failed = JSON.parse(broken.out)
    assert.equal(failed.ok, false)
    const restore = failed.restore.checks.find((c: { name: string }) => c.name === 'restore')
    assert.equal(restore.ok, false)
    assert.match(restore.detail, /ENOENT|pg_ctl/)
    assert.deepEqual(readdirSync(join(dir, 'pgbackrest', 'scratch')), [])
  })

  it('plinth dr drill --pitr: a workload, the disaster, a restore of the archived WAL into a scratch cluster, a Plinth on it; then --to-time with 0 mismatches', async () => {
    const tcp = `postgresql://postgres:pitr-test-pw@127.0.0.1:${source.port}/postgres`
    const drillEnv = { ...env, DATABASE_URL: tcp, PLINTH_BACKUP_DIR: join(dir, 'reports') }
    const r = await cli(['dr', 'drill', '--pitr', '--json'], drillEnv)
    assert.equal(r.code, 0, `${r.out}\n${r.err}`)
    const report = JSON.parse(r.out)
    assert.equal(report.ok, true, JSON.stringify(report.checks))
    assert.equal(report.backupKind, 'pgbackrest')
    assert.match(report.backupId, /^\d{8}-\d{6}F/)
    assert.deepEqual(
      report.checks.map((c: { name: string; ok: boolean }) => [c.name, c.ok]),
      [
        ['restore', true],
        ['ready', true],
      ],
    )
    assert.equal(report.rtoBasis, 'ready')
    assert.ok(report.rtoSeconds > report.restoreSeconds)
    // RPO from the canaries: what archiving had not shipped at the disaster (archive_timeout here is 10 s).
    assert.equal(report.rpoBasis, 'canaries')
    assert.ok(report.canaries.recovered >= 1)
    assert.ok(report.rpoSeconds > 0 && report.rpoSeconds < 30, `RPO ${report.rpoSeconds}`)
    assert.equal(report.meetsTargets.rpo, true)
    assert.deepEqual(report.pitr, { toTime: null })
    assert.deepEqual(readdirSync(join(dir, 'pgbackrest', 'scratch')), [])
    console.log(
      `PITR drill ${report.id}: RTO ${report.rtoSeconds} s (restore ${report.restoreSeconds} s), RPO ${report.rpoSeconds} s`,
    )

    // To a point in time: every canary committed up to it is in the copy, none after.
    const [row] = await query<{ t: string }>(
      tcp,
      `select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as t`,
    )
    const targetTime = row!.t
    await query(tcp, "insert into backup_canaries (drill) values ('after-the-target')")
    await query(tcp, 'select pg_switch_wal()')
    await waitFor(
      'the WAL past the target to be archived',
      async () => {
        const st = await cli(['pitr', 'status', '--json'], env)
        return st.code === 0 && JSON.parse(st.out).archive.pendingBytes === 0
      },
      { timeoutMs: 60_000, intervalMs: 500 },
    )
    const at = await cli(['dr', 'drill', '--pitr', '--to-time', targetTime, '--json'], drillEnv)
    assert.equal(at.code, 0, `${at.out}\n${at.err}`)
    const pitr = JSON.parse(at.out)
    assert.equal(pitr.ok, true, JSON.stringify(pitr.checks))
    assert.equal(pitr.pitr.toTime, targetTime)
    assert.equal(pitr.pitr.mismatches, 0)
    assert.ok(pitr.pitr.expected >= 10, `${pitr.pitr.expected} canaries up to the target`)
    assert.equal(pitr.pitr.recovered, pitr.pitr.expected)
    assert.ok(Date.parse(pitr.canaries.lastRecoveredAt) <= Date.parse(targetTime))
    console.log(
      `PITR drill ${pitr.id} to ${targetTime}: RTO ${pitr.rtoSeconds} s, ${pitr.pitr.recovered}/${pitr.pitr.expected} canaries, ${pitr.pitr.mismatches} mismatches`,
    )
    const list = await cli(['dr', 'list', '--json'], drillEnv)
    assert.deepEqual(
      JSON.parse(list.out).drills.map((d: { id: string }) => d.id),
      [pitr.id, report.id],
    )
  })
})
