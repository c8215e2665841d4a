import assert from 'node:assert/strict'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import { ConfigError, configEnv, describeConfig, loadConfig, redactUrl } from './load-config.ts'

/** A new directory under the temporary folder, removed once this file's tests are done. */
const tempDirs: string[] = []
after(() => {
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true })
})
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'plinth-config-'))
  tempDirs.push(dir)
  return dir
}

const SECRET = 'a'.repeat(40)
const MASTER_KEY = Buffer.alloc(32, 1).toString('base64')
const load = (env: Record<string, string>, extra: { cwd?: string; envFile?: string | false } = {}) =>
  loadConfig({ env, envFile: false, ...extra })

function problemsOf(
  env: Record<string, string>,
  extra: { cwd?: string; envFile?: string } = {},
): readonly string[] {
  try {
    load(env, extra)
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${err}`)
    return err.problems
  }
  assert.fail('expected the configuration to be refused')
}

describe('loadConfig', () => {
  it('gives working development defaults with nothing set', () => {
    const c = load({})
    assert.equal(c.env, 'development')
    assert.equal(c.port, 3000)
    assert.equal(c.host, 'localhost')
    assert.equal(c.dataDir, './data')
    assert.equal(c.databaseUrl, undefined)
    assert.equal(c.logFormat, 'pretty')
    assert.equal(c.apiDocs, true)
    assert.deepEqual(c.opsNetworks, ['127.0.0.0/8', '::1/128'])
    assert.ok(Object.isFrozen(c))
  })

  it('derives defaults from the environment (production binds all interfaces, JSON logs, no docs UI)', () => {
    const c = load({ PLINTH_ENV: 'production', PLINTH_SECRET_KEY: SECRET, PLINTH_MASTER_KEY: MASTER_KEY })
    assert.equal(c.host, '0.0.0.0')
    assert.equal(c.logFormat, 'json')
    assert.equal(c.logLevel, 'info')
    assert.equal(c.apiDocs, false)
    assert.equal(c.shutdownDelay, 5000)
  })

  it('parses every type: integers, booleans, durations, sizes, lists, URLs and ratios', () => {
    const c = load({
      PORT: '8080',
      PLINTH_MIGRATE_ON_START: 'off',
      PLINTH_DB_CONNECT_TIMEOUT: '2.5s',
      PLINTH_SHUTDOWN_TIMEOUT: '2m',
      PLINTH_BODY_LIMIT: '512kb',
      PLINTH_CORS_ORIGINS: 'https://a.example.com, http://localhost:5173 ,',
      PLINTH_TRUST_PROXY: '10.0.0.0/8,::1',
      DATABASE_URL: 'postgres://u:p@db:5432/app',
      PLINTH_MAX_HEAP_USED_RATIO: '0.5',
    })
    assert.equal(c.port, 8080)
    assert.equal(c.migrateOnStart, false)
    assert.equal(c.dbConnectTimeout, 2500)
    assert.equal(c.shutdownTimeout, 120_000)
    assert.equal(c.bodyLimit, 512 * 1024)
    assert.deepEqual(c.corsOrigins, ['https://a.example.com', 'http://localhost:5173'])
    assert.deepEqual(c.trustProxy, ['10.0.0.0/8', '::1'])
    assert.equal(c.databaseUrl, 'postgres://u:p@db:5432/app')
    assert.equal(c.maxHeapUsedRatio, 0.5)
  })

  it('lists every problem in one error, each naming the variable and the fix', () => {
    const problems = problemsOf({
      PORT: 'eighty',
      PLINTH_ENV: 'prod',
      PLINTH_DB_POOL_MAX: '0',
      PLINTH_MIGRATE_ON_START: 'maybe',
      PLINTH_DB_CONNECT_TIMEOUT: 'soon',
      PLINTH_TRUST_PROXY: '10.0.0.0/99',
      REDIS_URL: 'http://cache',
      PLINTH_MAX_HEAP_USED_RATIO: '2',
    })
    const expected = [
      'PLINTH_ENV',
      'PORT',
      'PLINTH_DB_POOL_MAX',
      'PLINTH_MIGRATE_ON_START',
      'PLINTH_DB_CONNECT_TIMEOUT',
      'PLINTH_TRUST_PROXY',
      'REDIS_URL',
      'PLINTH_MAX_HEAP_USED_RATIO',
    ]
    assert.equal(problems.length, expected.length, problems.join('\n'))
    for (const name of expected)
      assert.ok(
        problems.some((p) => p.startsWith(name)),
        `${name} missing in\n${problems.join('\n')}`,
      )
    assert.match(problems.find((p) => p.startsWith('PORT'))!, /whole number/)
  })

  it('formats the error as one message with a bullet per problem', () => {
    try {
      load({ PORT: 'x', PLINTH_DB_POOL_MAX: 'y' })
      assert.fail('expected an error')
    } catch (err) {
      assert.ok(err instanceof ConfigError)
      assert.equal(err.code, 'PLINTH_CONFIG_INVALID')
      assert.match(
        err.message,
        /^Invalid configuration \(2 problems\):\n {2}- PORT: .*\n {2}- PLINTH_DB_POOL_MAX: /,
      )
      assert.match(err.message, /docs\/configuration\.md/)
    }
  })

  for (const env of ['staging', 'production']) {
    it(`refuses ${env} without a secret key or a master key, saying how to make them`, () => {
      const problems = problemsOf({ PLINTH_ENV: env })
      assert.equal(problems.length, 2, problems.join('\n'))
      assert.match(problems[0]!, /PLINTH_SECRET_KEY is required in .*openssl rand/)
      assert.match(problems[1]!, /PLINTH_MASTER_KEY is required in .*openssl rand -base64 32/)
    })
  }

  it('refuses unsafe production settings', () => {
    const problems = problemsOf({
      PLINTH_ENV: 'production',
      PLINTH_SECRET_KEY: 'short',
      PLINTH_LOG_BODIES: 'true',
      PLINTH_LOG_FORMAT: 'pretty',
      PLINTH_LOG_LEVEL: 'trace',
      PLINTH_REPLICAS: '3',
      PLINTH_CORS_ORIGINS: '*',
      PLINTH_CORS_CREDENTIALS: 'true',
      PLINTH_OPS_TOKEN: 'tiny',
    })
    for (const pattern of [
      /SECRET_KEY is shorter/,
      /LOG_BODIES/,
      /LOG_FORMAT=pretty/,
      /LOG_LEVEL=trace/,
      /PLINTH_REPLICAS=3 but DATABASE_URL/,
      /CORS_CREDENTIALS=true/,
      /OPS_TOKEN is shorter/,
    ]) {
      assert.ok(
        problems.some((p) => pattern.test(p)),
        `${pattern} missing in\n${problems.join('\n')}`,
      )
    }
  })

  it('allows several replicas on a PostgreSQL server', () => {
    assert.equal(load({ PLINTH_REPLICAS: '3', DATABASE_URL: 'postgres://db/app' }).replicas, 3)
  })

  it('refuses origins that are not scheme://host[:port]', () => {
    const problems = problemsOf({ PLINTH_CORS_ORIGINS: 'https://ok.example.com,example.com/path' })
    assert.equal(problems.length, 1)
    assert.match(problems[0]!, /"example\.com\/path" is not an origin/)
  })

  it('reads secrets from <NAME>_FILE, trimmed', () => {
    const dir = tempDir()
    writeFileSync(join(dir, 'secret'), `${SECRET}\n`)
    const c = load(
      { PLINTH_ENV: 'production', PLINTH_SECRET_KEY_FILE: 'secret', PLINTH_MASTER_KEY: MASTER_KEY },
      { cwd: dir },
    )
    assert.equal(c.secretKey, SECRET)
  })

  it('refuses a secret set both directly and by file, and a missing or empty file', () => {
    const dir = tempDir()
    writeFileSync(join(dir, 'empty'), '\n')
    const problems = problemsOf(
      {
        PLINTH_SECRET_KEY: SECRET,
        PLINTH_SECRET_KEY_FILE: 'x',
        PLINTH_OPS_TOKEN_FILE: 'missing',
        DATABASE_URL_FILE: 'empty',
      },
      { cwd: dir },
    )
    assert.equal(problems.length, 3, problems.join('\n'))
    assert.match(problems.join('\n'), /PLINTH_SECRET_KEY and PLINTH_SECRET_KEY_FILE are both set/)
    assert.match(
      problems.join('\n'),
      /PLINTH_OPS_TOKEN_FILE points to missing, which cannot be read \(ENOENT\)/,
    )
    assert.match(problems.join('\n'), /DATABASE_URL_FILE points to empty, which is empty/)
  })

  it('never echoes a secret value in a problem', () => {
    const problems = problemsOf({ DATABASE_URL: 'mysql://admin:hunter2-very-secret@db/app' })
    assert.equal(problems.length, 1)
    assert.doesNotMatch(problems[0]!, /hunter2/)
    assert.match(problems[0]!, /^DATABASE_URL: the value is not valid \(not shown: it is secret\)/)
  })

  it('refuses a master key that is not base64 of 32 bytes, without echoing it', () => {
    for (const bad of ['c2hvcnQ=', `${MASTER_KEY}AAAA`, 'not base64 at all, but 44 characters long!!']) {
      const problems = problemsOf({ PLINTH_MASTER_KEY: bad })
      assert.equal(problems.length, 1, problems.join('\n'))
      assert.match(
        problems[0]!,
        /^PLINTH_MASTER_KEY is not base64 of exactly 32 bytes.*openssl rand -base64 32/,
      )
      assert.ok(!problems[0]!.includes(bad))
    }
    assert.equal(load({ PLINTH_MASTER_KEY: ` ${MASTER_KEY}\n` }).masterKey?.trim(), MASTER_KEY)
  })

  it('reads a .env file beneath the environment, which wins', () => {
    const dir = tempDir()
    writeFileSync(join(dir, '.env'), '# comment\nPORT=4100\nPLINTH_LOG_LEVEL="error"\n')
    const c = loadConfig({ env: { PLINTH_LOG_LEVEL: 'warn' }, cwd: dir })
    assert.equal(c.port, 4100)
    assert.equal(c.logLevel, 'warn')
    assert.equal(loadConfig({ env: {}, cwd: join(dir, 'nowhere') }).port, 3000, 'a missing .env file is fine')
  })

  it('treats empty values as unset', () => {
    assert.equal(load({ PORT: '', DATABASE_URL: '  ' }).port, 3000)
  })
})

describe('describeConfig', () => {
  it('masks secrets and keeps connection URLs readable without their password', () => {
    const c = load({
      PLINTH_SECRET_KEY: SECRET,
      DATABASE_URL: 'postgres://app:pw123@db:5432/app',
      REDIS_URL: 'redis://:rpw@cache:6379',
    })
    const shown = JSON.stringify(describeConfig(c))
    assert.doesNotMatch(shown, /pw123|rpw|aaaaaaaa/)
    assert.match(shown, /postgres:\/\/app:\*\*\*\*@db:5432\/app/)
    assert.equal(describeConfig(c).PLINTH_SECRET_KEY, '********')
    assert.equal(redactUrl('not a url'), '********')
  })
})

describe('configEnv', () => {
  it('gives another process exactly this configuration, secrets, lists, durations and unset keys included', () => {
    const config = loadConfig({
      env: {
        PLINTH_ENV: 'test',
        PLINTH_DATA_DIR: 'memory://',
        PLINTH_SECRET_KEY: 'x'.repeat(40),
        PLINTH_CORS_ORIGINS: 'https://a.example,https://b.example',
        PLINTH_SHUTDOWN_TIMEOUT: '2m',
        PLINTH_BODY_LIMIT: '2mb',
        PLINTH_MAX_HEAP_USED_RATIO: '0.5',
        PLINTH_MIGRATE_ON_START: 'false',
      },
      envFile: false,
    })
    const env = configEnv(config)
    assert.equal(env.PLINTH_SHUTDOWN_TIMEOUT, '120000')
    assert.equal(env.DATABASE_URL, '', 'an unset key is an empty string, so a .env file cannot fill it in')
    assert.deepEqual(loadConfig({ env, envFile: false }), config)
    // A .env file beneath it changes nothing.
    const dir = mkdtempSync(join(tmpdir(), 'plinth-config-env-'))
    try {
      writeFileSync(join(dir, '.env'), 'DATABASE_URL=postgres://elsewhere/db\nPLINTH_ROLE=worker\n')
      assert.deepEqual(loadConfig({ env, cwd: dir }), config)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
