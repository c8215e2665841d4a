import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { runCliWithEnv as cli } from './helpers/run-cli.ts'
import { closedPort } from './helpers/smtp-server.ts'

const hasPgbackrest = (() => {
  try {
    execFileSync('pgbackrest', ['version'])
    return true
  } catch {
    return false
  }
})()

describe('plinth pitr against pgBackRest with no cluster', {
  skip: !hasPgbackrest && 'pgbackrest is not installed',
}, () => {
  let dir: string
  let env: Record<string, string>
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'plinth-pitr-cli-'))
    env = {
      PLINTH_ENV: 'test',
      PLINTH_DATA_DIR: 'memory://',
      PLINTH_LOG_LEVEL: 'silent',
      PLINTH_PITR_STANZA: 'cli',
      PLINTH_PITR_PG_DATA: join(dir, 'pgdata'),
      PLINTH_PITR_PG_PORT: String(await closedPort()),
      PLINTH_PITR_PG_SOCKET: dir,
      PLINTH_PITR_CIPHER_PASS: 'pitr-cli-test-passphrase-42',
      PLINTH_PITR_REPO_PATH: join(dir, 'repo'),
    }
  })
  after(() => rmSync(dir, { recursive: true, force: true }))

  it('setup writes the configuration, says what is left to do (the SQL), and exits 1 until ready', async () => {
    const run = await cli(['pitr', 'setup'], env)
    assert.equal(run.code, 1, run.err)
    assert.match(
      run.out,
      new RegExp(`^pgBackRest configuration: ${join(dir, 'repo', 'pgbackrest.conf')}$`, 'm'),
    )
    assert.match(run.out, /^ {2}ok {3}config: wrote /m)
    assert.match(run.out, /^ {2}TODO /m)
    assert.match(run.out, /^ {2}ALTER SYSTEM SET wal_level = 'replica';$/m)
    assert.doesNotMatch(run.out, /pitr-cli-test-passphrase-42/)
  })

  it('status names the missing stanza (text and --json) and exits 1', async () => {
    const text = await cli(['pitr', 'status'], env)
    assert.equal(text.code, 1, text.err)
    assert.match(text.out, /^stanza cli: repository NOT OK \(missing stanza path\)$/m)
    assert.match(text.out, /^ {2}last backup: none$/m)
    assert.match(text.out, /^ {2}WAL in the repository: - \.\. -$/m)
    const json = await cli(['pitr', 'status', '--json'], env)
    assert.equal(json.code, 1)
    const parsed = JSON.parse(json.out) as { stanza: string; repository: { ok: boolean }; backups: unknown[] }
    assert.equal(parsed.stanza, 'cli')
    assert.equal(parsed.repository.ok, false)
    assert.deepEqual(parsed.backups, [])
  })

  it('verify of an empty repository passes; a backup fails with pgBackRest’s reason', async () => {
    const verify = await cli(['pitr', 'verify'], env)
    assert.equal(verify.code, 0, verify.err)
    assert.match(verify.out, /^pgbackrest verify: ok /)
    const backup = await cli(['pitr', 'backup', '--type', 'diff'], env)
    assert.equal(backup.code, 1)
    assert.match(backup.err, /pgbackrest backup failed/)
  })

  it('restore needs exactly one target (usage, exit 2), and confirmation or --yes', async () => {
    const neither = await cli(['pitr', 'restore'], env)
    assert.equal(neither.code, 2)
    assert.match(neither.err, /restore needs exactly one of --to-time <ISO time> or --to-lsn <LSN>/)
    const both = await cli(
      ['pitr', 'restore', '--to-lsn', '0/3000028', '--to-time', '2026-12-06T03:55:10Z'],
      env,
    )
    assert.equal(both.code, 2)
    // Not a terminal: nothing to confirm with, so nothing is restored.
    const unconfirmed = await cli(['pitr', 'restore', '--to-lsn', '0/3000028'], env)
    assert.equal(unconfirmed.code, 1)
    assert.match(unconfirmed.err, /not confirmed: nothing was restored \(pass --yes to skip the question\)/)
    const confirmed = await cli(['pitr', 'restore', '--to-lsn', '0/3000028', '--yes'], env)
    assert.equal(confirmed.code, 1)
    assert.match(confirmed.err, /pgbackrest restore failed/)
  })

  it('refuses to run without its configuration, naming what is missing', async () => {
    const run = await cli(['pitr', 'status'], { ...env, PLINTH_PITR_CIPHER_PASS: 'short' })
    assert.equal(run.code, 1)
    assert.match(run.err, /PLINTH_PITR_CIPHER_PASS to a passphrase of at least 20 characters/)
  })
})
