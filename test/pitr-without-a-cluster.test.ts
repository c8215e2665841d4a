import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import {
  archiveSettings,
  createPitr,
  type PitrConfig,
  pitrSettingsOf,
  readPgbackrestConf,
  renderPgbackrestConf,
} from '../src/modules/backups/pitr.ts'
import { isPlinthError } from '../src/shared/errors.ts'
import { captureLogs } from './helpers/log-capture.ts'
import { skipUnlessPostgres, TEST_DATABASE_URL } from './helpers/services.ts'
import { closedPort } from './helpers/smtp-server.ts'
import { testConfig } from './helpers/test-config.ts'

const CIPHER = 'pitr-test-passphrase-0123456789'
const hasPgbackrest = (() => {
  try {
    execFileSync('pgbackrest', ['version'])
    return true
  } catch {
    return false
  }
})()

const noPostgres = await skipUnlessPostgres()

const dirs: string[] = []
const freshDir = () => {
  const d = mkdtempSync(join(tmpdir(), 'plinth-pitr-unit-'))
  dirs.push(d)
  return d
}
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true })
})

const config = (env: Record<string, string>): PitrConfig => testConfig(env)
const withCode = (code: string, detail?: RegExp) => (err: unknown) => {
  assert.ok(isPlinthError(err), `expected a PlinthError, got ${String(err)}`)
  assert.equal(err.code, code)
  if (detail) assert.match(err.message, detail)
  return true
}

describe('PITR settings from the configuration', () => {
  const complete = {
    PLINTH_PITR_STANZA: 'main',
    PLINTH_PITR_PG_DATA: '/var/lib/postgresql/17/main',
    PLINTH_PITR_CIPHER_PASS: CIPHER,
    PLINTH_PITR_REPO_PATH: '/srv/pitr',
  }

  it('names what is missing or wrong', () => {
    const cases: [Record<string, string>, RegExp][] = [
      [{ ...complete, PLINTH_PITR_STANZA: '' }, /set PLINTH_PITR_STANZA/],
      [{ ...complete, PLINTH_PITR_STANZA: 'has space' }, /PLINTH_PITR_STANZA is letters, digits/],
      [{ ...complete, PLINTH_PITR_PG_DATA: '' }, /set PLINTH_PITR_PG_DATA/],
      [{ ...complete, PLINTH_PITR_CIPHER_PASS: 'short' }, /at least 20 characters/],
      [{ ...complete, PLINTH_PITR_CIPHER_PASS: '' }, /at least 20 characters/],
      [{ ...complete, PLINTH_PITR_REPO_PATH: '' }, /set PLINTH_PITR_REPO_PATH/], // the data dir is memory://
    ]
    for (const [env, reason] of cases)
      assert.throws(
        () => pitrSettingsOf(config(env)),
        withCode('PLINTH_PITR_NOT_CONFIGURED', reason),
        String(reason),
      )
  })

  it('keeps the repository under the data directory by default, the config file in it, the timeout in seconds', () => {
    const dataDir = freshDir()
    const s = pitrSettingsOf(
      config({
        ...complete,
        PLINTH_PITR_REPO_PATH: '',
        PLINTH_DATA_DIR: dataDir,
        PLINTH_PITR_ARCHIVE_TIMEOUT: '200ms',
      }),
    )
    assert.equal(s.repoPath, join(dataDir, 'pgbackrest'))
    assert.equal(s.configPath, join(dataDir, 'pgbackrest', 'pgbackrest.conf'))
    assert.equal(s.archiveTimeoutSeconds, 1, 'at least a second')
    const explicit = pitrSettingsOf(
      config({
        ...complete,
        PLINTH_PITR_CONFIG: '/etc/pgbackrest/plinth.conf',
        PLINTH_PITR_ARCHIVE_TIMEOUT: '90s',
      }),
    )
    assert.equal(explicit.configPath, '/etc/pgbackrest/plinth.conf')
    assert.equal(explicit.archiveTimeoutSeconds, 90)
  })

  it('renders the stanza configuration and the server settings archiving needs', () => {
    const s = pitrSettingsOf(config({ ...complete, PLINTH_PITR_ARCHIVE_TIMEOUT: '60s' }))
    const conf = renderPgbackrestConf(s)
    assert.match(conf, /^repo1-path=\/srv\/pitr\/repo$/m)
    assert.match(conf, /^repo1-cipher-type=aes-256-cbc$/m)
    assert.match(conf, new RegExp(`^repo1-cipher-pass=${CIPHER}$`, 'm'))
    assert.match(
      conf,
      /^\[main\]\npg1-path=\/var\/lib\/postgresql\/17\/main\npg1-port=\d+\npg1-socket-path=/m,
    )
    assert.deepEqual(archiveSettings(s), {
      wal_level: 'replica',
      archive_mode: 'on',
      archive_command: 'pgbackrest --config=/srv/pitr/pgbackrest.conf --stanza=main archive-push %p',
      archive_timeout: '60s',
    })
  })
})

describe('PITR with pgBackRest but no cluster to archive', {
  skip: !hasPgbackrest && 'pgbackrest is not installed',
}, () => {
  const logs = captureLogs(testConfig())
  const settingsIn = async (dir: string, over: Record<string, string> = {}) =>
    pitrSettingsOf(
      config({
        PLINTH_PITR_STANZA: 'unit',
        PLINTH_PITR_PG_DATA: join(dir, 'pgdata'),
        PLINTH_PITR_PG_PORT: String(await closedPort()),
        PLINTH_PITR_PG_SOCKET: dir,
        PLINTH_PITR_CIPHER_PASS: CIPHER,
        PLINTH_PITR_REPO_PATH: join(dir, 'pitr'),
        ...over,
      }),
    )

  it('setup writes the configuration (mode 0600) and reports the failed check, never the passphrase', async () => {
    const s = await settingsIn(freshDir())
    const pitr = createPitr({ settings: s, logger: logs.logger })
    const result = await pitr.setup({ apply: false })
    assert.equal(result.ready, false)
    assert.equal(result.restartNeeded, false)
    assert.equal(result.configPath, s.configPath)
    assert.equal(statSync(s.configPath).mode & 0o777, 0o600)
    assert.equal(readFileSync(s.configPath, 'utf8'), renderPgbackrestConf(s))
    assert.equal(await readPgbackrestConf(s), renderPgbackrestConf(s))
    assert.deepEqual(
      result.steps.map((x) => [x.name, x.ok]),
      [
        ['config', true],
        ['check', false],
      ],
    )
    assert.match(result.steps[1]?.detail ?? '', /^pgbackrest stanza-create failed \(exit \d+\): /)
    assert.ok(!JSON.stringify(result.steps).includes(CIPHER))
    assert.deepEqual(result.sql, [
      "ALTER SYSTEM SET wal_level = 'replica';",
      "ALTER SYSTEM SET archive_mode = 'on';",
      `ALTER SYSTEM SET archive_command = 'pgbackrest --config=${s.configPath} --stanza=unit archive-push %p';`,
      "ALTER SYSTEM SET archive_timeout = '60s';",
    ])
  })

  it('status says the stanza is missing and lists no backup; a backup fails in pgBackRest’s words', async () => {
    const s = await settingsIn(freshDir())
    const pitr = createPitr({ settings: s, logger: logs.logger })
    await pitr.setup({ apply: false })
    const status = await pitr.status()
    assert.equal(status.stanza, 'unit')
    assert.equal(status.repository.ok, false)
    assert.match(status.repository.message, /missing stanza/)
    assert.deepEqual(status.backups, [])
    assert.equal(status.lastBackup, null)
    assert.equal(status.lastBackupAgeSeconds, null)
    assert.deepEqual(status.archive, {
      min: null,
      max: null,
      lastArchivedWal: null,
      lastArchivedAt: null,
      lastFailedWal: null,
      lastFailedAt: null,
      pendingBytes: null,
      lagSeconds: null,
    })
    await assert.rejects(
      pitr.backup('full'),
      withCode('PLINTH_PITR_FAILED', /^pgbackrest backup failed \(exit \d+\): /),
    )
  })

  it('reports the archiver of a live server with status', { skip: noPostgres }, async () => {
    const s = await settingsIn(freshDir())
    const pitr = createPitr({ settings: s, logger: logs.logger })
    await pitr.setup({ apply: false })
    const { archive } = await pitr.status({ databaseUrl: TEST_DATABASE_URL })
    // What is pending is measured from the last archived segment: none archived, nothing measured.
    assert.equal(archive.pendingBytes === null, archive.lastArchivedWal === null)
    assert.equal(archive.lagSeconds === null, archive.lastArchivedWal === null)
    if (archive.lastArchivedWal !== null) assert.ok(archive.pendingBytes! >= 0)
    assert.equal(archive.min, null, 'the repository holds no WAL')
  })

  it('says pgBackRest is not installed when its binary is missing', async () => {
    const s = { ...(await settingsIn(freshDir())), binary: join(freshDir(), 'pgbackrest') }
    const verified = await createPitr({ settings: s, logger: logs.logger }).verify()
    assert.deepEqual(verified, {
      ok: false,
      detail: 'pgbackrest is not installed on this host (Debian: apt-get install pgbackrest).',
    })
  })

  it('refuses an operating-system user the host does not have', async () => {
    const s = await settingsIn(freshDir(), { PLINTH_PITR_OS_USER: 'no-such-user-plinth' })
    await assert.rejects(
      createPitr({ settings: s, logger: logs.logger }).setup({ apply: false }),
      withCode(
        'PLINTH_PITR_NOT_CONFIGURED',
        /PLINTH_PITR_OS_USER names no user of this host \("no-such-user-plinth"\)/,
      ),
    )
  })

  describe('restore', () => {
    const restoreIn = async (dir: string) =>
      createPitr({ settings: await settingsIn(dir), logger: logs.logger })

    it('needs exactly one valid target: a time with a zone, or an LSN', async () => {
      const pitr = await restoreIn(freshDir())
      const invalid = withCode('PLINTH_PITR_TARGET_INVALID')
      await assert.rejects(pitr.restore({}), invalid)
      await assert.rejects(pitr.restore({ toTime: '2026-12-06T03:55:10Z', toLsn: '0/3000028' }), invalid)
      await assert.rejects(
        pitr.restore({ toLsn: '3000028' }),
        withCode('PLINTH_PITR_TARGET_INVALID', /not an LSN/),
      )
      await assert.rejects(
        pitr.restore({ toTime: '2026-12-06 03:55' }),
        withCode('PLINTH_PITR_TARGET_INVALID', /not an ISO 8601 time with a zone/),
      )
    })

    it('refuses a data directory a server runs on, or one not empty without --force', async () => {
      const dir = freshDir()
      const pitr = await restoreIn(dir)
      const running = join(dir, 'running')
      mkdirSync(running)
      writeFileSync(join(running, 'postmaster.pid'), '4242\n')
      await assert.rejects(
        pitr.restore({ toLsn: '0/3000028', pgData: running, force: true }),
        withCode('PLINTH_BACKUP_TARGET_NOT_EMPTY', /stop it first/),
      )
      const used = join(dir, 'used')
      mkdirSync(used)
      writeFileSync(join(used, 'PG_VERSION'), '17\n')
      await assert.rejects(
        pitr.restore({ toTime: '2026-12-06T03:55:10.55+01:00', pgData: used }),
        withCode('PLINTH_BACKUP_TARGET_NOT_EMPTY', /pass --force --yes/),
      )
    })

    it('hands a valid request to pgBackRest, which fails without a backup to restore', async () => {
      const dir = freshDir()
      const pitr = await restoreIn(dir)
      await pitr.setup({ apply: false })
      const failed = withCode('PLINTH_PITR_FAILED', /^pgbackrest restore failed \(exit \d+\): /)
      // Into a directory that does not exist yet (it is created 0700)…
      await assert.rejects(pitr.restore({ toTime: '2026-12-06T03:55:10Z', pgData: join(dir, 'new') }), failed)
      assert.equal(statSync(join(dir, 'new')).mode & 0o777, 0o700)
      // …and over a non-empty one with --force (pgBackRest --delta).
      const used = join(dir, 'used')
      mkdirSync(used)
      writeFileSync(join(used, 'PG_VERSION'), '17\n')
      await assert.rejects(pitr.restore({ toLsn: '0/3000028', pgData: used, force: true }), failed)
    })
  })
})
