import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import { PASSWORD } from './helpers/accounts.ts'
import { formatLeaks, LOG_DIR_ENV, readSecrets, scanLogs } from './helpers/log-scan.ts'

const dirs: string[] = []
after(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true })
})
function runDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'plinth-log-scan-test-'))
  dirs.push(dir)
  return dir
}

const token = (prefix: string) => `${prefix}${randomBytes(32).toString('base64url')}`
const ndjson = (rows: readonly object[]) => rows.map((r) => `${JSON.stringify(r)}\n`).join('')
const line = (msg: string, extra: Record<string, unknown> = {}) => ({
  level: 'info',
  time: '2026-01-01T00:00:00.000Z',
  service: 'plinth',
  env: 'test',
  requestId: '3f0c1d52-7b8e-4c2a-9d41-5e6f7a8b9c0d',
  ...extra,
  msg,
})

// What test processes record, and what a run logs without leaking anything.
const secrets = {
  password: PASSWORD,
  session: token('pls_'),
  csrf: randomBytes(32).toString('base64url'),
  totp: 'JBSWY3DPEHPK3PXPJBSWY3DP',
  recovery: '7k2m-q9xd-4hvr-t0bz',
  master: Buffer.alloc(32, 9).toString('base64'),
  webhook: randomBytes(32).toString('base64url'),
}
const recorded = [
  { kind: 'password', value: secrets.password },
  { kind: 'session token', value: secrets.session },
  { kind: 'CSRF token', value: secrets.csrf },
  { kind: 'TOTP secret', value: secrets.totp },
  { kind: 'recovery code', value: secrets.recovery },
  { kind: 'master key', value: secrets.master },
  { kind: 'webhook secret', value: secrets.webhook },
]
const clean = [
  line('request completed', {
    method: 'POST',
    route: '/api/v1/auth/login',
    path: '/api/v1/auth/login',
    statusCode: 200,
  }),
  line('request body', { body: { email: 'ada@example.com', password: '[redacted]', code: '[redacted]' } }),
  line('request rejected', { code: 'PLINTH_AUTH_MFA_INVALID', err: { code: '23505' }, count: 123456 }),
  line('security event', {
    type: 'login:succeeded',
    userId: 'b1946ac9-2f3e-4c1a-8d6f-0a1b2c3d4e5f',
    tokenId: 'a1b2c3d4e5f6',
  }),
  line('data key rotated', {
    keyId: '0123456789abcdef',
    kekId: 'fedcba9876543210',
    hash: randomBytes(32).toString('base64url'),
  }),
  line('mail sent', { mailId: 'c0ffee00-1234-4abc-9def-001122334455', category: 'password-reset' }),
  line('job completed', {
    jobId: '5d41402a-bc4b-4a76-b971-9d911017c592',
    queue: 'webhook-delivery',
    authorization: '[redacted]',
  }),
]

/** A run directory with the recorded secrets, the clean lines, and `lines` after them. */
function plant(lines: readonly object[] | string): { dir: string; first: number } {
  const dir = runDir()
  writeFileSync(join(dir, 'a.test.ts-100.secrets.ndjson'), ndjson(recorded))
  const planted = typeof lines === 'string' ? lines : ndjson(lines)
  writeFileSync(join(dir, 'b.test.ts-200.log.ndjson'), ndjson(clean) + planted)
  return { dir, first: clean.length + 1 }
}

describe('the whole-run log scan', () => {
  it('passes clean logs: ids, hashes, redacted fields, error codes and SQLSTATEs, 6-digit numbers', () => {
    const { dir } = plant([])
    const result = scanLogs(dir)
    assert.deepEqual(result.leaks, [])
    assert.equal(result.files, 1)
    assert.equal(result.lines, clean.length)
    assert.equal(result.secrets, recorded.length)
  })

  const knownLeaks: [string, string, object][] = [
    ['password', 'password', line('login failed', { detail: `tried ${secrets.password}` })],
    ['session token', 'session token', line('x', { note: secrets.session })],
    ['CSRF token', 'CSRF token', line('x', { header: `csrf=${secrets.csrf};` })],
    ['TOTP secret', 'TOTP secret', line('enrolled', { s: secrets.totp })],
    ['recovery code', 'recovery code', line(`code ${secrets.recovery} used`)],
    ['master key', 'master key', line('x', { k: secrets.master })],
    ['webhook secret', 'webhook secret', line('x', { signing: secrets.webhook })],
    ['a secret a child process logged', 'session token', { level: 'info', msg: `Bearer ${secrets.session}` }],
  ]
  for (const [what, kind, leak] of knownLeaks) {
    it(`reports a recorded ${what} by file, line and kind, without printing it`, () => {
      const { dir, first } = plant([leak])
      const result = scanLogs(dir)
      assert.deepEqual(result.leaks, [
        { file: 'b.test.ts-200.log.ndjson', line: first, kind, foundBy: 'known value' },
      ])
      const report = formatLeaks(result, dir)
      assert.match(report, new RegExp(`b\\.test\\.ts-200\\.log\\.ndjson:${first}: ${kind} \\(known value\\)`))
      for (const secret of Object.values(secrets))
        assert.ok(!report.includes(secret), 'the report holds a secret')
    })
  }

  const shapeLeaks: [string, string, object][] = [
    ['an unrecorded session token', 'session token', line('x', { note: token('pls_') })],
    ['an unrecorded API token', 'API token', line('x', { note: `key=${token('plt_')}` })],
    ['an unrecorded MFA challenge', 'MFA challenge', line('x', { note: token('plc_') })],
    ['an unrecorded reset token', 'reset token', line('x', { url: `/reset?token=${token('plr_')}` })],
    ['an unrecorded invite token', 'invite token', line('x', { note: token('pli_') })],
    [
      'an otpauth URI',
      'TOTP secret (otpauth URI)',
      line('x', { uri: 'otpauth://totp/Plinth:ada?secret=ABC' }),
    ],
    [
      'an argon2 hash',
      'password hash',
      line('x', { row: { hash: '$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA' } }),
    ],
    ['an unrecorded recovery code', 'recovery code', line('x', { note: 'abcd-efgh-jkmn-pqrs' })],
    [
      'a TOTP code in a body',
      'TOTP code',
      line('request body', { body: { challenge: '[redacted]', code: '123456' } }),
    ],
    ['a TOTP code under another name', 'TOTP code', line('x', { input: { totpCode: '09876543' } })],
    [
      'credentials after Bearer',
      'credentials (Authorization)',
      line('x', { h: 'Bearer abcdefghijklmnopqrstuvwxyz' }),
    ],
    [
      'a base64 key under a key name',
      'master key',
      line('x', { masterKey: Buffer.alloc(32, 1).toString('base64') }),
    ],
    [
      'a secret in an env assignment',
      'secret configuration value',
      line('PLINTH_OPS_TOKEN=abcdefghijklmnop set'),
    ],
  ]
  for (const [what, kind, leak] of shapeLeaks) {
    it(`reports ${what} by its shape`, () => {
      const { dir, first } = plant([leak])
      assert.deepEqual(scanLogs(dir).leaks, [
        { file: 'b.test.ts-200.log.ndjson', line: first, kind, foundBy: 'shape' },
      ])
    })
  }

  for (const field of [
    'password',
    'newPassword',
    'token',
    'secret',
    'recoveryCodes',
    'authorization',
    'cookie',
  ]) {
    it(`reports a "${field}" field that is not [redacted]`, () => {
      const value = field === 'recoveryCodes' ? ['one', 'two'] : 'short'
      const { dir, first } = plant([line('x', { nested: { [field]: value } })])
      assert.deepEqual(scanLogs(dir).leaks, [
        {
          file: 'b.test.ts-200.log.ndjson',
          line: first,
          kind: `unredacted "${field}"`,
          foundBy: 'unredacted field',
        },
      ])
    })
  }

  it('finds a recorded secret at either end of a line, and one of the minimum length', () => {
    const dir = runDir()
    const short = 'abcdefghij'
    writeFileSync(join(dir, 's.secrets.ndjson'), ndjson([...recorded, { kind: 'secret', value: short }]))
    writeFileSync(
      join(dir, 'l.log.ndjson'),
      `${secrets.session} at the start\nat the end ${secrets.csrf}\n-${short}-\n${secrets.master}\n`,
    )
    assert.deepEqual(
      scanLogs(dir).leaks.map((l) => [l.line, l.kind]),
      [
        [1, 'session token'],
        [2, 'CSRF token'],
        [3, 'secret'],
        [4, 'master key'],
      ],
    )
  })

  it('allows reset and invitation links in mail captured without SMTP (development and test only), nothing else', () => {
    const body = (value: string) =>
      line('mail captured (no SMTP_URL)', { component: 'mail', to: 'ada@example.com', text: `Open ${value}` })
    const { dir, first } = plant([
      body(`https://x.test/reset-password?token=${token('plr_')}`),
      body(`https://x.test/invite?token=${token('pli_')}`),
      body(`your session ${secrets.session}`),
      body(`your password ${secrets.password}`),
    ])
    assert.deepEqual(
      scanLogs(dir).leaks.map((l) => [l.line - first, l.kind]),
      [
        [2, 'session token'],
        [3, 'password'],
      ],
    )
  })

  it('keeps scanning past a cut line in a secrets file', () => {
    const dir = runDir()
    writeFileSync(join(dir, 's.secrets.ndjson'), `${ndjson(recorded)}{"kind":"password","va`)
    assert.equal(readSecrets(dir).size, recorded.length)
  })
})

// Without the outer run's test context and coverage, the nested run is a run of its own.
const { NODE_TEST_CONTEXT: _context, NODE_V8_COVERAGE: _coverage, ...outerEnv } = process.env

/** `node --test` with the global log scan on test/fixtures/log-scan-run.ts. */
function nestedRun(env: Record<string, string>): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      ['--test', '--test-global-setup=test/helpers/global-log-scan.ts', 'test/fixtures/log-scan-run.ts'],
      { env: { ...outerEnv, [LOG_DIR_ENV]: '', ...env } },
    )
    let output = ''
    child.stdout.on('data', (d) => (output += d))
    child.stderr.on('data', (d) => (output += d))
    const timer = setTimeout(() => child.kill('SIGKILL'), 120_000)
    child.on('error', reject)
    child.on('close', (code) => {
      clearTimeout(timer)
      resolve({ code, output })
    })
  })
}

describe('the log scan of a run (node --test --test-global-setup)', () => {
  it('captures an account flow and its secrets, and fails the run on each leak, naming file, line and kind but not the secret', async () => {
    const dir = runDir() // named by the caller: the teardown keeps it, so its contents can be checked
    const run = await nestedRun({ [LOG_DIR_ENV]: dir, LEAK: 'session,password,totp' })
    assert.equal(run.code, 1, run.output)
    // Only the three planted lines: the rest of the flow's logs (bodies included) are clean.
    assert.match(run.output, /log scan: 3 log line\(s\) hold a secret \(of [1-9]\d+ lines in 1 files\)/)
    for (const kind of ['session token', 'password', 'TOTP secret']) {
      assert.match(
        run.output,
        new RegExp(`log-scan-run\\.ts-\\d+\\.log\\.ndjson:\\d+: ${kind} \\(known value\\)`),
      )
    }
    const secrets = readSecrets(dir)
    for (const secret of secrets.keys()) assert.ok(!run.output.includes(secret), 'the output holds a secret')
    const kinds = new Set(secrets.values())
    for (const kind of [
      'password',
      'session token',
      'CSRF token',
      'API token',
      'TOTP secret',
      'recovery code',
    ]) {
      assert.ok(kinds.has(kind), `no ${kind} recorded (recorded: ${[...kinds].join(', ')})`)
    }
    assert.ok(existsSync(dir), 'the logs are kept for inspection')
  })

  it('passes a clean run and removes the run directory it created', async (t) => {
    // In this process: the setup points PLINTH_TEST_LOG_DIR elsewhere for the duration, then back.
    const outer = process.env[LOG_DIR_ENV]
    t.after(() => {
      process.env[LOG_DIR_ENV] = outer
    })
    process.env[LOG_DIR_ENV] = ''
    const { globalSetup, globalTeardown } = await import('./helpers/global-log-scan.ts')
    globalSetup()
    const dir = process.env[LOG_DIR_ENV]!
    assert.match(dir, /plinth-test-logs-/)
    writeFileSync(join(dir, 'x.test.ts-1.secrets.ndjson'), ndjson(recorded))
    writeFileSync(join(dir, 'x.test.ts-1.log.ndjson'), ndjson(clean))
    globalTeardown()
    assert.equal(process.exitCode ?? 0, 0)
    assert.ok(!existsSync(dir), 'the run directory is removed')
  })
})
