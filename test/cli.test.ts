import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import { PLINTH_VERSION } from '../src/core/version.ts'
import { runCliCaptured as cli } from './helpers/run-cli.ts'
import { spawnCli } from './helpers/spawn-cli.ts'
import { TEST_MASTER_KEY } from './helpers/test-config.ts'

describe('plinth CLI arguments', () => {
  const usageCases: [string, string[], number, RegExp, 'out' | 'err'][] = [
    ['no command prints usage and exits 2', [], 2, /Usage: plinth <command>/, 'err'],
    ['--help prints usage and exits 0', ['--help'], 0, /Commands:\n {2}start/, 'out'],
    ['an unknown command exits 2', ['launch'], 2, /unknown command "launch"/, 'err'],
    [
      'start --help describes roles',
      ['start', '--help'],
      0,
      /--role api\|worker\|all[\s\S]*worker: workers/,
      'out',
    ],
    ['migrate --help lists actions', ['migrate', '-h'], 0, /down {2,}revert[\s\S]*--to N/, 'out'],
    ['config --help', ['config', '--help'], 0, /plinth config <check>/, 'out'],
    [
      'an action has its own --help',
      ['jobs', 'list', '--help'],
      0,
      /Usage: plinth jobs list \[--name NAME\]/,
      'out',
    ],
    [
      'an unknown option exits 2 with the usage',
      ['start', '--rolle', 'api'],
      2,
      /Unknown option '--rolle'[\s\S]*Usage: plinth start/,
      'err',
    ],
    ['a wrong role exits 2', ['start', '--role', 'boss'], 2, /--role must be one of api, worker, all/, 'err'],
    ['migrate without action exits 2', ['migrate'], 2, /missing action/, 'err'],
    [
      'migrate with an unknown action exits 2',
      ['migrate', 'sideways'],
      2,
      /unknown action "sideways"/,
      'err',
    ],
    ['--to must be a number', ['migrate', 'down', '--to', 'x'], 2, /--to takes a migration number/, 'err'],
    [
      '--to does not go with status',
      ['migrate', 'status', '--to', '1'],
      2,
      /--to goes with "up" or "down", not "status"/,
      'err',
    ],
    ['config needs "check"', ['config'], 2, /missing action/, 'err'],
    ['config with another subcommand exits 2', ['config', 'show'], 2, /unknown action "show"/, 'err'],
    [
      'version takes no arguments',
      ['version', 'extra'],
      2,
      /"version" takes no arguments[\s\S]*Usage: plinth version/,
      'err',
    ],
    ['completion needs a shell', ['completion', 'fish'], 2, /the shell is bash or zsh/, 'err'],
  ]
  for (const [name, argv, code, pattern, stream] of usageCases) {
    it(name, async () => {
      const result = await cli(...argv)
      assert.equal(result.code, code, result.err || result.out)
      assert.match(result[stream], pattern)
    })
  }

  it('prints the version', async () => {
    for (const argv of [['version'], ['--version']]) {
      const { code, out } = await cli(...argv)
      assert.equal(code, 0)
      assert.equal(out, `plinth ${PLINTH_VERSION} (node ${process.version})\n`)
    }
  })
})

describe('plinth config check', () => {
  it('accepts a valid configuration and prints it with secrets masked', async () => {
    const r = await spawnCli(['config', 'check', '--print'], {
      PLINTH_ENV: 'production',
      PLINTH_SECRET_KEY: 's'.repeat(48),
      PLINTH_MASTER_KEY: TEST_MASTER_KEY,
      DATABASE_URL: 'postgres://app:topsecretpw@db.internal:5432/app',
    })
    assert.equal(r.code, 0, r.err)
    assert.match(r.out, /^Configuration is valid for production\./)
    assert.match(r.out, /DATABASE_URL=postgres:\/\/app:\*\*\*\*@db\.internal:5432\/app/)
    assert.match(r.out, /PLINTH_SECRET_KEY=\*{8}/)
    assert.match(r.out, /PLINTH_MASTER_KEY=\*{8}/)
    assert.doesNotMatch(r.out + r.err, /topsecretpw|ssssssss/)
    assert.ok(!(r.out + r.err).includes(TEST_MASTER_KEY))
  })

  it('exits 1 listing every problem at once', async () => {
    const r = await spawnCli(['config', 'check'], {
      PLINTH_ENV: 'production',
      PORT: 'abc',
      PLINTH_LOG_BODIES: 'true',
    })
    assert.equal(r.code, 1)
    assert.match(r.err, /Invalid configuration \(4 problems\)/)
    assert.match(r.err, /PORT: expected a whole number/)
    assert.match(r.err, /PLINTH_SECRET_KEY is required in production/)
    assert.match(r.err, /PLINTH_MASTER_KEY is required in production/)
    assert.match(r.err, /PLINTH_LOG_BODIES=true is refused in production/)
  })
})

describe('plinth migrate on the embedded database', () => {
  const dir = mkdtempSync(join(tmpdir(), 'plinth-cli-'))
  const env = { PLINTH_ENV: 'test', PLINTH_DATA_DIR: dir, PLINTH_LOG_LEVEL: 'silent' }
  after(() => rmSync(dir, { recursive: true, force: true }))

  it('lists, applies and reverts migrations, keeping state on disk between runs', async () => {
    let r = await spawnCli(['migrate', 'status'], env)
    assert.equal(r.code, 0, r.err)
    assert.match(r.out, /^pending {2}0001-create-settings$/m)
    r = await spawnCli(['migrate', 'up'], env)
    assert.equal(r.code, 0, r.err)
    assert.match(r.out, /^applied {2}0001-create-settings$/m)
    r = await spawnCli(['migrate', 'status'], env)
    assert.match(r.out, /^applied {2}0001-create-settings {2}\(\d{4}-/m)
    r = await spawnCli(['migrate', 'up'], env)
    assert.equal(r.out, 'Nothing to do.\n')
    r = await spawnCli(['migrate', 'down', '--to', '0'], env)
    assert.equal(r.code, 0, r.err)
    assert.match(r.out, /^reverted {2}0001-create-settings$/m)
    r = await spawnCli(['migrate', 'down', '--to', '77'], env)
    assert.equal(r.code, 1)
    assert.match(r.err, /No migration has the number 77.*PLINTH_MIGRATION_UNKNOWN/)
  })

  it('fails clearly when the database cannot be reached', async () => {
    const r = await spawnCli(['migrate', 'status'], {
      PLINTH_ENV: 'test',
      PLINTH_LOG_LEVEL: 'silent',
      DATABASE_URL: 'postgres://nobody:pw@127.0.0.1:1/none',
      PLINTH_DB_CONNECT_DEADLINE: '600ms',
    })
    assert.equal(r.code, 1)
    assert.match(
      r.err,
      /Could not connect to the database at postgres:\/\/nobody:\*\*\*\*@127\.0\.0\.1:1\/none/,
    )
    assert.match(r.err, /PLINTH_DB_UNREACHABLE/)
    assert.doesNotMatch(r.err, /:pw@/)
  })
})

describe('the plinth bin', () => {
  it('runs on Node 24 even when an older node starts it', {
    skip: !process.env.PATH?.includes('/usr/bin'),
  }, async () => {
    const r = await spawnCli(['version'], {}, { entry: 'bin/plinth.js', node: '/usr/bin/node' })
    assert.equal(r.code, 0, r.err)
    assert.match(r.out, new RegExp(`^plinth ${PLINTH_VERSION.replaceAll('.', '\\.')} \\(node v2[4-9]\\.`))
  })
})
