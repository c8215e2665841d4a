/**
 * The CLI's contract with scripts (issue #14): results on standard output, logs on standard error;
 * `--json` on every action that prints data, parsed here with JSON.parse; exit codes 0/1/2; a reader
 * that closes early never keeps a command alive; `--help` for every command and action.
 *
 * One PostgreSQL database is shared: the JSON runs go in this process (runCli, one Plinth each), the
 * stream and pipe checks spawn one process per command.
 */
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { commands } from '../src/cli/commands.ts'
import { createPocketBaseData } from './helpers/migration-sources.ts'
import { runCliCaptured as cli } from './helpers/run-cli.ts'
import { teeChildLogs } from './helpers/run-logs.ts'
import { skipUnlessPostgres } from './helpers/services.ts'
import { childBaseEnv, spawnCli } from './helpers/spawn-cli.ts'
import { TEST_MASTER_KEY } from './helpers/test-config.ts'
import { createTestDatabase, type TestDatabase } from './helpers/test-database.ts'

const PASSWORD = 'a long and unusual pass phrase 7'

describe('plinth --help', () => {
  it('answers for every command and every action, from the declaration, exit 0 on stdout', async () => {
    for (const c of commands) {
      for (const argv of [[c.name, '--help'], ...(c.actions ?? []).map((a) => [c.name, a.name, '--help'])]) {
        const r = await cli(...argv)
        assert.equal(r.code, 0, argv.join(' '))
        assert.equal(r.err, '')
        assert.match(r.out, new RegExp(`^Usage: plinth ${c.name}`), argv.join(' '))
        assert.match(r.out, /Exit codes: 0 done, 1 failed/)
        const action = c.actions?.find((a) => a.name === argv[1])
        if (action?.json !== undefined) assert.match(r.out, /--json prints: /, argv.join(' '))
      }
    }
  })

  it('refuses wrong arguments with exit 2 and the usage on stderr, for every command', async () => {
    for (const c of commands) {
      const r = await cli(c.name, '--no-such-option')
      assert.equal(r.code, 2, c.name)
      assert.equal(r.out, '')
      assert.match(r.err, /Unknown option '--no-such-option'[\s\S]*Usage: plinth/)
      if (c.actions) {
        const missing = await cli(c.name)
        assert.equal(missing.code, 2)
        assert.match(missing.err, /missing action/)
        const unknown = await cli(c.name, 'sideways')
        assert.equal(unknown.code, 2)
        assert.match(unknown.err, /unknown action "sideways"/)
      }
    }
    const misplaced = await cli('keys', 'status', '--resume')
    assert.equal(misplaced.code, 2)
    assert.match(misplaced.err, /--resume goes with "rotate", not "status"/)
    const choice = await cli('jobs', 'list', '--state', 'sleeping')
    assert.equal(choice.code, 2)
    assert.match(choice.err, /--state must be one of created, retry/)
  })

  it('prints bash and zsh completion naming every command and action', async () => {
    for (const shell of ['bash', 'zsh']) {
      const r = await cli('completion', shell)
      assert.equal(r.code, 0)
      assert.match(r.out, /complete -F _plinth plinth/)
      for (const c of commands) {
        assert.ok(r.out.includes(c.name), c.name)
        for (const a of c.actions ?? []) assert.ok(r.out.includes(a.name), `${c.name} ${a.name}`)
      }
    }
  })
})

describe('plinth on a shared database', { skip: await skipUnlessPostgres() }, () => {
  let database: TestDatabase
  const dataDir = mkdtempSync(join(tmpdir(), 'plinth-cli-contract-'))
  let env: Record<string, string>
  const saved = { ...process.env }

  before(async () => {
    database = await createTestDatabase()
    env = {
      PLINTH_ENV: 'test',
      DATABASE_URL: database.url,
      PLINTH_DATA_DIR: dataDir,
      PLINTH_MASTER_KEY: TEST_MASTER_KEY,
      PLINTH_KEYS_REFRESH: '1s',
      PLINTH_LOG_LEVEL: 'info',
      PLINTH_LOG_FORMAT: 'json',
    }
    // The in-process runs read their configuration from this process's environment.
    Object.assign(process.env, env)
    const migrated = await cli('migrate', 'up', '--json')
    assert.equal(migrated.code, 0, migrated.err)
    // A user to export and one to erase, created by the real command (password on stdin).
    const admin = await spawnCli(
      ['user', 'create', '--admin', '--email', 'admin@example.com', '--json'],
      env,
      {
        stdin: `${PASSWORD}\n`,
      },
    )
    assert.equal(admin.code, 0, admin.err)
    assert.equal(JSON.parse(admin.out).role, 'admin')
    const erasable = await spawnCli(['user', 'create', '--email', 'gone@example.com', '--json'], env, {
      stdin: `${PASSWORD}\n`,
    })
    assert.equal(erasable.code, 0, erasable.err)
    // A PocketBase data directory with one user, for plinth import pocketbase.
    createPocketBaseData(
      join(dataDir, 'pb_data'),
      [{ id: 'pbuser000000001', email: 'pb@example.com', password: PASSWORD }],
      [],
    )
  })
  after(async () => {
    for (const key of Object.keys(env)) if (!(key in saved)) delete process.env[key]
    Object.assign(process.env, saved)
    await database?.drop()
    rmSync(dataDir, { recursive: true, force: true })
  })

  it('prints JSON that JSON.parse accepts for every action that declares --json', async () => {
    const covered = new Set<string>(['user create'])
    const run = async (...argv: string[]) => {
      covered.add(argv.slice(0, 2).join(' '))
      const r = await cli(...argv, '--json')
      assert.equal(r.code, 0, `${argv.join(' ')}: ${r.err}`)
      try {
        return JSON.parse(r.out)
      } catch {
        assert.fail(`${argv.join(' ')} printed no JSON: ${r.out}`)
      }
    }
    const status = (await run('migrate', 'status')) as { name: string; applied: boolean }[]
    assert.ok(status.length > 0 && status.every((m) => m.applied))
    assert.deepEqual((await run('migrate', 'up')).done, [])
    // Down to the newest migration: nothing to revert (reverting the audit migrations refuses sealed rows).
    const newest = String(Number.parseInt(status.at(-1)!.name, 10))
    assert.deepEqual(await run('migrate', 'down', '--to', newest), { action: 'down', done: [] })

    assert.equal((await run('version')).version.length > 0, true)
    covered.add('version')
    const codes = (await run('errors')) as { code: string; status: number; module: string | null }[]
    assert.ok(codes.some((c) => c.code === 'PLINTH_HTTP_NOT_FOUND' && c.status === 404 && c.module === null))
    covered.add('errors')
    assert.equal((await run('config', 'check', '--print')).valid, true)
    assert.ok(Array.isArray(await run('migrate', 'status')))
    const enqueued = await run('jobs', 'enqueue', 'plinth.heartbeat', '--delay', '600000')
    assert.equal(enqueued.created, true)
    // A job in one of pg-boss' own queues (what cron ticks go through) is the engine's business.
    const { PgBoss } = await import('pg-boss')
    const boss = new PgBoss({
      connectionString: database.url,
      schema: 'plinth_jobs',
      supervise: false,
      schedule: false,
    })
    await boss.start()
    await boss.createQueue('__pgboss__send-it').catch(() => {})
    assert.ok(await boss.send('__pgboss__send-it', { internal: true }))
    await boss.stop({ graceful: false })
    const listed = (await run('jobs', 'list')) as { name: string }[]
    assert.ok(listed.length > 0)
    assert.deepEqual(
      listed.filter((j) => j.name.startsWith('__pgboss')),
      [],
      'internal queues never appear in jobs list (nor GET /api/v1/jobs: the same query)',
    )
    assert.equal((await run('jobs', 'show', enqueued.id)).id, enqueued.id)
    assert.equal((await run('jobs', 'cancel', enqueued.id)).state, 'cancelled')
    assert.equal((await run('jobs', 'retry', enqueued.id)).id, enqueued.id)
    assert.ok(Array.isArray(await run('jobs', 'types')))
    assert.equal(typeof (await run('jobs', 'purge-dead', 'plinth.heartbeat')).count, 'number')
    assert.equal(typeof (await run('jobs', 'redrive-dead', 'plinth.heartbeat')).count, 'number')
    const schedule = await run('schedules', 'create', '--job', 'plinth.heartbeat', '--cron', '*/5 * * * *')
    assert.ok(Array.isArray(await run('schedules', 'list')))
    assert.equal((await run('schedules', 'show', schedule.id)).id, schedule.id)
    assert.equal(
      (await run('schedules', 'update', schedule.id, '--tz', 'Europe/Paris')).timezone,
      'Europe/Paris',
    )
    assert.equal((await run('schedules', 'pause', schedule.id)).paused, true)
    assert.equal((await run('schedules', 'resume', schedule.id)).paused, false)
    assert.equal((await run('schedules', 'delete', schedule.id)).deleted, schedule.id)
    assert.ok(Array.isArray(await run('retention', 'list')))
    assert.equal(typeof (await run('retention', 'run')).ok, 'boolean')
    assert.equal(typeof (await run('privacy', 'export', '--user', 'admin@example.com')), 'object')
    assert.ok((await run('privacy', 'erase', '--user', 'gone@example.com', '--yes')).pseudonym)
    assert.ok(Array.isArray((await run('keys', 'status')).keys))
    assert.equal(typeof (await run('keys', 'rotate')).activeId, 'string')
    assert.equal((await run('audit', 'verify')).valid, true)
    assert.equal(typeof (await run('audit', 'prune')).pruned, 'number')
    const exported = await cli('audit', 'export', '--json')
    assert.equal(exported.code, 0, exported.err)
    const lines = exported.out.trim().split('\n')
    assert.ok(lines.length > 0)
    for (const line of lines) JSON.parse(line)
    covered.add('audit export')

    // keys rewrap without a previous master key fails: exit 1, the JSON flag changes nothing there.
    const rewrap = await cli('keys', 'rewrap', '--json')
    assert.equal(rewrap.code, 1)
    assert.match(rewrap.err, /PLINTH_MASTER_KEY_PREVIOUS is not set/)
    covered.add('keys rewrap')

    // Backups: into PLINTH_DATA_DIR/backups (pg_dump of the test database), then restored elsewhere.
    const backup = await run('backup', 'create')
    assert.equal(backup.status, 'verified', JSON.stringify(backup))
    assert.ok((await run('backup', 'list')).backups.some((b: { id: string }) => b.id === backup.id))
    assert.equal((await run('backup', 'show', backup.id)).id, backup.id)
    assert.equal((await run('backup', 'verify', backup.id)).ok, true)
    assert.equal((await run('backup', 'prune', '--dry-run')).dryRun, true)
    // Files: the storage under PLINTH_DATA_DIR/files (no file stored here).
    assert.equal(typeof (await run('files', 'usage')).files, 'number')
    assert.equal((await run('files', 'sweep', '--dry-run')).dryRun, true)
    assert.equal(typeof (await run('files', 'verify')).checked, 'number')
    const restoreTarget = await createTestDatabase()
    try {
      assert.equal((await run('backup', 'restore', backup.id, '--target', restoreTarget.url)).matches, true)
      assert.equal(
        typeof (await run('backup', 'reapply-erasures', '--target', restoreTarget.url)).erasuresReapplied,
        'number',
      )
    } finally {
      await restoreTarget.drop()
    }
    const drill = await run('dr', 'drill')
    assert.equal(drill.ok, true, JSON.stringify(drill.checks))
    assert.ok((await run('dr', 'list')).drills.some((d: { id: string }) => d.id === drill.id))
    // pitr needs a pgBackRest stanza on a cluster of its own: test/pitr.test.ts parses each action's --json.
    for (const a of ['setup', 'backup', 'status', 'verify', 'restore']) covered.add(`pitr ${a}`)

    assert.equal((await run('import', 'pocketbase', join(dataDir, 'pb_data'))).ok, true)
    covered.add('import')

    // Every action that declares a --json shape was run above.
    for (const c of commands) {
      if (c.json !== undefined) assert.ok(covered.has(c.name), c.name)
      for (const a of c.actions ?? [])
        if (a.json !== undefined)
          assert.ok(covered.has(`${c.name} ${a.name}`), `${c.name} ${a.name} --json untested`)
    }
  })

  it('exits 1 naming the cause, and the fields of an invalid payload', async () => {
    const missing = await cli('jobs', 'show', '00000000-0000-4000-8000-000000000000')
    assert.equal(missing.code, 1)
    assert.match(missing.err, /PLINTH_JOB_NOT_FOUND/)
    assert.equal(missing.out, '')
    const invalid = await cli('jobs', 'enqueue', 'plinth.webhook-delivery', '--payload', '{}')
    assert.equal(invalid.code, 1)
    assert.match(invalid.err, /PLINTH_JOB_PAYLOAD_INVALID/)
    // Each field on its own line, not just "`errors` names the fields".
    assert.match(invalid.err, /\n {2}- \S.*: /)
  })

  it('keeps standard output for the result and logs on standard error', async () => {
    for (const argv of [
      ['jobs', 'list', '--json', '--verbose'],
      ['keys', 'status', '--json', '--verbose'],
    ]) {
      const r = await spawnCli(argv, env)
      assert.equal(r.code, 0, r.err)
      JSON.parse(r.out)
      assert.match(r.err, /^\{"level":"info"/m, `${argv.join(' ')} logged nothing at --verbose`)
      assert.doesNotMatch(r.err, /job engine started/)
    }
    // Without --verbose: warn and above only, and no "job engine started" from a command that runs no workers.
    const quiet = await spawnCli(['jobs', 'list', '--json'], env)
    assert.equal(quiet.code, 0, quiet.err)
    JSON.parse(quiet.out)
    assert.doesNotMatch(quiet.err, /"level":"(info|debug)"/)
  })

  it('finishes its work when standard error is closed (logs lost, never the command)', async () => {
    const child = spawn(process.execPath, ['src/main.ts', 'jobs', 'list', '--json', '--verbose'], {
      env: { ...childBaseEnv(), ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    child.stderr.destroy()
    let out = ''
    child.stdout.on('data', (d) => (out += d))
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000)
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve))
    clearTimeout(timer)
    assert.equal(code, 0, 'exit 0, not killed')
    assert.ok(Array.isArray(JSON.parse(out)))
  })

  it('exits when its reader closes early, for every command that prints data', async () => {
    const runs: string[][] = [
      ['version', '--json'],
      ['errors', '--json'],
      ['config', 'check', '--print', '--json'],
      ['migrate', 'status', '--json'],
      ['jobs', 'list', '--json'],
      ['schedules', 'list', '--json'],
      ['audit', 'export', '--json'],
      ['retention', 'list', '--json'],
      ['privacy', 'export', '--user', 'admin@example.com', '--json'],
      ['keys', 'status', '--json'],
      ['backup', 'list', '--json'],
      ['import', 'pocketbase', join(dataDir, 'pb_data'), '--json'],
      ['dr', 'list', '--json'],
      ['files', 'usage', '--json'],
      ['completion', 'bash'],
      ['--help'],
    ]
    for (const c of commands)
      assert.ok(runs.some((r) => r[0] === c.name) || ['start', 'user', 'pitr'].includes(c.name), c.name)
    const closeEarly = (argv: string[]) =>
      new Promise<{ code: number | null; first: string }>((resolve, reject) => {
        // Logs on stdout too would be the old hang (a full pipe nobody reads): --verbose, JSON logs.
        const logs = commands.find((c) => c.name === argv[0])?.logs === true
        const child = spawn(process.execPath, ['src/main.ts', ...argv, ...(logs ? ['--verbose'] : [])], {
          env: { ...childBaseEnv(), ...env },
          stdio: ['ignore', 'pipe', 'pipe'],
        })
        teeChildLogs(child, env)
        let first = ''
        child.stdout.once('data', (d: Buffer) => {
          first = String(d).slice(0, 40)
          child.stdout.destroy()
        })
        child.stderr.resume()
        const timer = setTimeout(() => child.kill('SIGKILL'), 60_000)
        child.on('error', reject)
        child.on('exit', (code) => {
          clearTimeout(timer)
          resolve({ code, first })
        })
      })
    // Two at a time: each is a full Node process on a shared machine.
    for (let i = 0; i < runs.length; i += 2) {
      const batch = runs.slice(i, i + 2)
      const results = await Promise.all(batch.map(closeEarly))
      results.forEach((r, j) => {
        const name = batch[j]!.join(' ')
        assert.notEqual(r.code, null, `${name} had to be killed: it hung after its reader closed`)
        assert.equal(r.code, 0, name)
        if (batch[j]!.includes('--json'))
          assert.match(r.first, /^[[{]/, `${name}: stdout began with ${r.first}`)
      })
    }
  })
})
