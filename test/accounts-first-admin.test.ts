import assert from 'node:assert/strict'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PassThrough, Writable } from 'node:stream'
import { after, before, describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import type { CliIo } from '../src/cli/cli-io.ts'
import { type PasswordSource, readPassword, userCommand } from '../src/cli/user-create.ts'
import { bootstrapAdmin, createUserDirect } from '../src/modules/accounts/bootstrap-admin.ts'
import {
  login,
  loginResponse,
  NO_RATE_LIMITS,
  OTHER_PASSWORD,
  PASSWORD,
  uniqueEmail,
} from './helpers/accounts.ts'
import { captureLogs } from './helpers/log-capture.ts'
import { runCliCaptured as cli } from './helpers/run-cli.ts'
import { skipUnlessPostgres } from './helpers/services.ts'
import { spawnCli } from './helpers/spawn-cli.ts'
import { testConfig } from './helpers/test-config.ts'
import { createTestDatabase, type TestDatabase } from './helpers/test-database.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'

const dir = mkdtempSync(join(tmpdir(), 'plinth-first-admin-'))
after(() => rmSync(dir, { recursive: true, force: true }))

/** The e-mail addresses of every administrator. */
const adminEmails = async (plinth: Pick<TestPlinth, 'db'>) =>
  (await plinth.db.kysely.selectFrom('users').select('email').where('role', '=', 'admin').execute()).map(
    (r) => r.email,
  )

describe('the first administrator from PLINTH_ADMIN_EMAIL', { skip: await skipUnlessPostgres() }, () => {
  let db: TestDatabase
  const email = uniqueEmail('first-admin')
  const passwordFile = join(dir, 'admin-password')
  const env = () => ({
    ...NO_RATE_LIMITS,
    DATABASE_URL: db.url,
    PLINTH_ADMIN_EMAIL: email,
    PLINTH_ADMIN_PASSWORD_FILE: passwordFile,
  })
  before(async () => {
    db = await createTestDatabase()
  })
  after(() => db?.drop())

  it('is created on the first start; a second start creates no other and does not fail', async () => {
    writeFileSync(passwordFile, `${PASSWORD}\n`)
    const logs = captureLogs(testConfig(), 'debug')
    const first = await startTestPlinth({ config: testConfig(env()), logger: logs.logger })
    try {
      assert.deepEqual(await adminEmails(first), [email])
      await login(first.app, email)
      assert.match(logs.text(), /created the first administrator from PLINTH_ADMIN_EMAIL/)
      assert.ok(!logs.text().includes(PASSWORD), 'the password reached the log')
    } finally {
      await first.close()
    }
    // A changed file is ignored once an administrator exists.
    writeFileSync(passwordFile, OTHER_PASSWORD)
    const second = await startTestPlinth({ config: testConfig(env()) })
    try {
      assert.deepEqual(await adminEmails(second), [email])
      await login(second.app, email)
      assert.equal((await loginResponse(second.app, email, OTHER_PASSWORD)).statusCode, 401)
    } finally {
      await second.close()
    }
  })

  it('never promotes an existing account with that address, and refuses a weak password by name', async () => {
    const plinth = await startTestPlinth({ backend: 'postgres' })
    try {
      const taken = uniqueEmail('taken')
      await createUserDirect(plinth.context, { email: taken, password: PASSWORD, role: 'member' })
      const logs = captureLogs(testConfig(), 'info')
      const ctx = { ...plinth.context, logger: logs.logger }
      await bootstrapAdmin({ ...ctx, config: { ...ctx.config, adminEmail: taken, adminPassword: PASSWORD } })
      assert.deepEqual(await adminEmails(plinth), [])
      assert.match(logs.text(), /not an administrator; it was not promoted/)
      await assert.rejects(
        bootstrapAdmin({
          ...ctx,
          config: { ...ctx.config, adminEmail: uniqueEmail(), adminPassword: 'short' },
        }),
        (err: Error & { code?: string }) =>
          err.code === 'PLINTH_AUTH_WEAK_PASSWORD' && /^PLINTH_ADMIN_PASSWORD: /.test(err.message),
      )
    } finally {
      await plinth.close()
    }
  })
})

/** The real `plinth` in a child process, with `stdin` piped in. */
const spawnPlinth = (args: string[], stdin: string, env: Record<string, string>) =>
  spawnCli(args, env, { stdin })

/** A fake terminal: what is typed goes in `input`; what the program shows collects in `shown()`. */
function terminal() {
  const input = Object.assign(new PassThrough(), { isTTY: true, setRawMode: () => input })
  let shown = ''
  const prompt = new Writable({
    write(chunk, _enc, done) {
      shown += String(chunk)
      done()
    },
  })
  const source: PasswordSource = { input, prompt }
  const typeAfter = async (promptText: string, text: string) => {
    for (let i = 0; i < 200 && !shown.includes(promptText); i++) await sleep(5)
    input.write(text)
  }
  return { source, shown: () => shown, typeAfter }
}

describe('plinth user create', () => {
  const cases: [string, string[], RegExp][] = [
    [
      'refuses --password=…',
      ['user', 'create', '--email', 'a@example.com', '--password=hunter2-secret'],
      /never taken from the command line/,
    ],
    [
      'refuses -p …',
      ['user', 'create', '--email', 'a@example.com', '-p', 'hunter2-secret'],
      /never taken from the command line/,
    ],
    [
      'refuses a stray word without repeating it',
      ['user', 'create', 'hunter2-secret', '--email', 'a@example.com'],
      /"create" takes no arguments/,
    ],
    ['needs --email', ['user', 'create', '--admin'], /--email needs an e-mail address/],
    [
      'needs a known role',
      ['user', 'create', '--email', 'a@example.com', '--role', 'boss'],
      /--role must be one of admin, operator, member, viewer/,
    ],
    [
      'refuses --admin with another --role',
      ['user', 'create', '--email', 'a@example.com', '--admin', '--role', 'viewer'],
      /--admin and --role disagree/,
    ],
  ]
  for (const [name, argv, pattern] of cases) {
    it(`${name} (exit 2)`, async () => {
      const r = await cli(...argv)
      assert.equal(r.code, 2, r.err)
      assert.match(r.err, pattern)
      assert.match(r.err, /Usage: plinth user create/)
      assert.doesNotMatch(r.err + r.out, /hunter2/)
    })
  }

  it('asks twice at a terminal without echoing what is typed', async () => {
    const t = terminal()
    const read = readPassword(t.source)
    await t.typeAfter('Password: ', `${PASSWORD}\r`)
    await t.typeAfter('Repeat the password: ', `${PASSWORD}\r`)
    assert.equal(await read, PASSWORD)
    assert.match(t.shown(), /Password: [\s\S]*Repeat the password: /)
    assert.ok(!t.shown().includes(PASSWORD), `echoed: ${JSON.stringify(t.shown())}`)

    const differ = terminal()
    const refused = readPassword(differ.source)
    await differ.typeAfter('Password: ', `${PASSWORD}\r`)
    await differ.typeAfter('Repeat the password: ', `${OTHER_PASSWORD}\r`)
    await assert.rejects(refused, /the two passwords differ/)
  })

  it('stops with 130 when Ctrl-C is typed at the prompt', async () => {
    const t = terminal()
    const io: CliIo = { out: () => {}, err: () => {} }
    const input = {
      action: 'create',
      args: [],
      values: { email: 'a@example.com' },
      json: false,
      verbose: false,
    }
    const run = userCommand(input, io, t.source)
    await t.typeAfter('Password: ', '\x03')
    assert.equal(await run, 130)
  })

  it('creates an administrator from the password on stdin, refuses a duplicate and a weak password, and never prints the password', async () => {
    const dataDir = join(dir, 'cli-data')
    const env = { PLINTH_ENV: 'test', PLINTH_DATA_DIR: dataDir, PLINTH_LOG_LEVEL: 'debug' }
    const args = ['user', 'create', '--admin', '--email', 'a@example.com']
    const created = await spawnPlinth(args, `${PASSWORD}\nnot read\n`, env)
    assert.equal(created.code, 0, created.err)
    assert.match(created.out, /^created user [0-9a-f-]{36} \(a@example\.com, admin\)$/m)
    const again = await spawnPlinth(args, `${OTHER_PASSWORD}\n`, env)
    assert.equal(again.code, 1)
    assert.match(again.err, /PLINTH_USER_EXISTS/)
    const weak = await spawnPlinth(['user', 'create', '--email', 'b@example.com'], 'letmein\n', env)
    assert.equal(weak.code, 1)
    assert.match(weak.err, /The password must be at least 8 characters\. \[PLINTH_AUTH_WEAK_PASSWORD\]/)
    const empty = await spawnPlinth(['user', 'create', '--email', 'c@example.com'], '', env)
    assert.equal(empty.code, 1)
    assert.match(empty.err, /no password given/)
    for (const r of [created, again, weak, empty]) {
      for (const secret of [PASSWORD, OTHER_PASSWORD, 'letmein']) assert.ok(!(r.out + r.err).includes(secret))
    }

    // The same data directory, opened by a server: the administrator signs in.
    const plinth = await startTestPlinth({
      config: testConfig({ ...NO_RATE_LIMITS, PLINTH_DATA_DIR: dataDir }),
    })
    try {
      const session = await login(plinth.app, 'a@example.com')
      const me = await plinth.app.inject({
        url: '/api/v1/me',
        headers: { authorization: `Bearer ${session.token}` },
      })
      assert.equal(me.json().user.role, 'admin')
      assert.deepEqual(await adminEmails(plinth), ['a@example.com'])
    } finally {
      await plinth.close()
    }
  })
})
