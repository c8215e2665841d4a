import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, afterEach, before, beforeEach, describe, it } from 'node:test'
import { sql } from 'kysely'
import { createPlinth } from '../src/app/create-plinth.ts'
import { builtinModules } from '../src/app/modules.ts'
import { formatEvent, formatStatus, reportRotation } from '../src/cli/keys.ts'
import { unwrapDataKey, wrappingKeyId, wrappingKeyIdOf } from '../src/infra/crypto/data-keys.ts'
import {
  createKeyring,
  deriveValueKey,
  deriveWrappingKey,
  keyringFromKeys,
} from '../src/infra/crypto/keyring.ts'
import { runCli } from '../src/main.ts'
import { totpSecretColumn } from '../src/modules/accounts/encrypted-columns.ts'
import { generateTotp } from '../src/modules/accounts/totp.ts'
import { type KeyStatus, keyStatus } from '../src/modules/keys/key-status.ts'
import { rotateKeys } from '../src/modules/keys/rotation.ts'
import { enrolTotp, loginResponse, NO_RATE_LIMITS, signUp, uniqueEmail } from './helpers/accounts.ts'
import { captureLogs } from './helpers/log-capture.ts'
import { keyStoreOf, secretColumn, secretRows, secretsModule, writeSecret } from './helpers/secrets-module.ts'
import { skipUnlessPostgres } from './helpers/services.ts'
import { spawnCli } from './helpers/spawn-cli.ts'
import { TEST_MASTER_KEY, testConfig } from './helpers/test-config.ts'
import { createTestDatabase, type TestDatabase } from './helpers/test-database.ts'
import { type Backend, startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'

const MASTER = Buffer.from(TEST_MASTER_KEY, 'base64')
const LEGACY = keyringFromKeys([deriveValueKey(MASTER)])
const columns = [...builtinModules.flatMap((m) => m.encryptedColumns ?? []), secretColumn]
/** No pressure refusals either: a loaded test machine must not turn a sign-in into a 503. */
const ENV = { ...NO_RATE_LIMITS, PLINTH_MAX_EVENT_LOOP_DELAY: '0', PLINTH_MASTER_KEY: TEST_MASTER_KEY }

/** Inserts a confirmed TOTP credential for `userId` as a release before data keys would have. */
async function legacyTotp(plinth: TestPlinth, userId: string, secret: string): Promise<string> {
  const value = LEGACY.encrypt(secret, totpSecretColumn.aad(userId))
  await plinth.db.kysely
    .insertInto('totp_credentials')
    .values({ user_id: userId, secret_ciphertext: value, key_id: LEGACY.keyId, confirmed_at: new Date() })
    .execute()
  return value
}

/**
 * Signs in with password then the TOTP code of the time `offsetMs` from now, taken just before it
 * is sent. Offsets are 0 or +30 s, never negative: the server accepts one step either side of its
 * own, so the code of the current step and of the next stay valid when a 30 s boundary passes
 * while the request is in flight, but a step-old code would then be two behind (a 401 seen on CI).
 */
async function signInWithTotp(
  plinth: TestPlinth,
  email: string,
  secret: string,
  offsetMs: number,
): Promise<number> {
  const first = await loginResponse(plinth.app, email)
  assert.equal(first.statusCode, 200, first.body)
  const res = await plinth.app.inject({
    method: 'POST',
    url: '/api/v1/auth/mfa',
    payload: { challenge: first.json().challenge, code: generateTotp(secret, Date.now() + offsetMs) },
  })
  return res.statusCode
}

for (const backend of ['embedded', 'postgres'] as const satisfies readonly Backend[]) {
  describe(`data keys on ${backend}`, {
    skip: backend === 'postgres' ? await skipUnlessPostgres() : false,
  }, () => {
    let plinth: TestPlinth
    before(async () => {
      plinth = await startTestPlinth({ backend, env: ENV, modules: [secretsModule] })
    })
    after(() => plinth?.close())

    it('the first start creates one active data key, wrapped by the master key, and encrypts with it', async () => {
      const rows = await keyStoreOf(plinth).rows()
      assert.equal(rows.length, 1)
      const [row] = rows
      assert.equal(row!.state, 'active')
      assert.equal(row!.retired_at, null)
      assert.equal(wrappingKeyIdOf(row!.wrapped_key), wrappingKeyId(MASTER))
      const key = unwrapDataKey({ current: MASTER }, row!.id, row!.wrapped_key)
      assert.ok(!row!.wrapped_key.includes(key.toString('base64url')))
      const { keyring } = plinth.context
      assert.equal(keyring.keyId, row!.id)
      assert.notEqual(keyring.keyId, LEGACY.keyId, 'new values are not under the master-derived key')
      assert.deepEqual(keyring.keyIds, [row!.id, LEGACY.keyId], 'the legacy key still decrypts')
    })

    it('TOTP secrets are written under the active data key, with key_id in step, and bound to their user', async () => {
      const a = await signUp(plinth.app, uniqueEmail('dk-a'))
      const b = await signUp(plinth.app, uniqueEmail('dk-b'))
      await enrolTotp(plinth.app, a)
      const row = await plinth.db.kysely
        .selectFrom('totp_credentials')
        .selectAll()
        .where('user_id', '=', a.userId)
        .executeTakeFirstOrThrow()
      const { keyring } = plinth.context
      assert.equal(keyring.keyIdOf(row.secret_ciphertext), keyring.keyId)
      assert.equal(row.key_id, keyring.keyId)
      await keyring.decryptStringAsync(row.secret_ciphertext, totpSecretColumn.aad(a.userId))
      await assert.rejects(
        keyring.decryptStringAsync(row.secret_ciphertext, totpSecretColumn.aad(b.userId)),
        {
          code: 'PLINTH_CRYPTO_DECRYPT_FAILED',
        },
      )
    })

    it('legacy values stay readable, are counted, and a rotation moves them and retires every old key', async () => {
      await sql`delete from totp_credentials`.execute(plinth.db.kysely)
      const email = uniqueEmail('legacy')
      const user = await signUp(plinth.app, email)
      const secret = 'JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP'
      const legacyValue = await legacyTotp(plinth, user.userId, secret)
      const enrolled = await signUp(plinth.app, uniqueEmail('current'))
      await enrolTotp(plinth.app, enrolled)
      const legacySecretId = await writeSecret(plinth, 'legacy secret', undefined, LEGACY)
      const ids = [await writeSecret(plinth, 'one'), await writeSecret(plinth, 'two')]
      // Codes work once: this one is the current step's, the one after rotation the next step's.
      assert.equal(await signInWithTotp(plinth, email, secret, 0), 200)

      const store = keyStoreOf(plinth)
      const before = await keyStatus(plinth.db.kysely, store, columns)
      const first = plinth.context.keyring.keyId
      assert.deepEqual(
        before.keys.map((k) => [k.id, k.state, k.legacy, k.values]),
        [
          [first, 'active', false, 3],
          [LEGACY.keyId, 'legacy', true, 2],
        ],
      )
      assert.deepEqual(
        before.columns
          .filter((c) => c.table === 'totp_credentials' || c.table === 'test_secrets')
          .map((c) => [`${c.table}.${c.column}`, c.total, c.byKey]),
        [
          ['totp_credentials.secret_ciphertext', 2, { [first]: 1, [LEGACY.keyId]: 1 }],
          ['test_secrets.secret', 3, { [first]: 2, [LEGACY.keyId]: 1 }],
        ],
      )
      assert.equal(before.unfinished, true)
      assert.deepEqual(before.warnings, [])

      const events: string[] = []
      const result = await rotateKeys(
        { db: plinth.db.kysely, store, columns, logger: captureLogs(plinth.config).logger },
        { graceMs: 0, batchSize: 2, onProgress: (e) => events.push(e.type) },
      )
      assert.ok(result.createdId)
      assert.equal(result.moved, 5)
      assert.deepEqual(result.failed, [])
      assert.deepEqual([...result.retired].sort(), [first, LEGACY.keyId].sort())
      assert.deepEqual(result.remaining, {})
      assert.equal(result.converged, true)
      assert.deepEqual(
        events.filter((e) => e !== 'batch'),
        ['started', 'retired'],
      )

      const after = await keyStatus(plinth.db.kysely, store, columns)
      assert.deepEqual(
        after.keys.map((k) => [k.id, k.state, k.values]).sort(),
        [
          [result.activeId, 'active', 5],
          [first, 'retired', 0],
          [LEGACY.keyId, 'retired', 0],
        ].sort(),
      )
      assert.equal(after.keys.find((k) => k.id === LEGACY.keyId)?.legacy, true)
      assert.equal(after.unfinished, false)
      assert.deepEqual(after.warnings, [])
      for (const row of await secretRows(plinth)) assert.equal(row.key_id, result.activeId)

      // The service picks the new key up, and drops retired ones (legacy included).
      const { keyring } = plinth.context
      await keyring.refresh()
      assert.deepEqual(keyring.keyIds, [result.activeId])
      assert.equal(await signInWithTotp(plinth, email, secret, 30_000), 200)
      for (const [id, text] of [
        [legacySecretId, 'legacy secret'],
        [ids[0]!, 'one'],
        [ids[1]!, 'two'],
      ] as const) {
        const row = (await secretRows(plinth)).find((r) => r.id === id)!
        assert.equal(await keyring.decryptStringAsync(row.secret, secretColumn.aad(id)), text)
      }
      await assert.rejects(keyring.decryptStringAsync(legacyValue, totpSecretColumn.aad(user.userId)), {
        code: 'PLINTH_CRYPTO_DECRYPT_FAILED',
      })
    })

    it('a ciphertext copied to another row does not decrypt there; rotation reports it and keeps the old key until it is fixed', async () => {
      const store = keyStoreOf(plinth)
      const a = await writeSecret(plinth, 'for a')
      const b = await writeSecret(plinth, 'for b')
      const rowA = (await secretRows(plinth)).find((r) => r.id === a)!
      await sql`update test_secrets set secret = ${rowA.secret} where id = ${b}`.execute(plinth.db.kysely)
      await assert.rejects(plinth.context.keyring.decryptStringAsync(rowA.secret, secretColumn.aad(b)), {
        code: 'PLINTH_CRYPTO_DECRYPT_FAILED',
      })

      const old = plinth.context.keyring.keyId
      const logs = captureLogs(plinth.config)
      const result = await rotateKeys(
        { db: plinth.db.kysely, store, columns, logger: logs.logger },
        { graceMs: 0 },
      )
      assert.deepEqual(result.failed, [{ table: 'test_secrets', column: 'secret', id: b, keyId: old }])
      assert.deepEqual(result.remaining, { [old]: 1 })
      assert.deepEqual(result.retired, [])
      const warning = logs
        .lines()
        .find((l) => l.msg === 'a stored value cannot be decrypted; it is left as it is')
      assert.equal(warning?.id, b)
      assert.ok(!logs.text().includes(rowA.secret), 'the value itself is not logged')
      const status = await keyStatus(plinth.db.kysely, store, columns)
      assert.equal(status.keys.find((k) => k.id === old)?.state, 'retiring')
      assert.equal(status.unfinished, true)

      // Once the bad row is fixed, a plain rerun finishes this rotation instead of starting another.
      await sql`delete from test_secrets where id = ${b}`.execute(plinth.db.kysely)
      const resumed = await rotateKeys(
        { db: plinth.db.kysely, store, columns, logger: logs.logger },
        { graceMs: 0 },
      )
      assert.equal(resumed.createdId, undefined)
      assert.equal(resumed.activeId, result.activeId)
      assert.deepEqual(resumed.retired, [old])
      assert.equal((await keyStatus(plinth.db.kysely, store, columns)).unfinished, false)
    })

    it('status names values under unknown keys, in no format, or under a retired key, and says what to do', async () => {
      const store = keyStoreOf(plinth)
      const stranger = keyringFromKeys([randomBytes(32)])
      const retired = (await store.rows()).find((r) => r.state === 'retired' && r.id !== LEGACY.keyId)!
      const retiredRing = keyringFromKeys([unwrapDataKey(store.masters, retired.id, retired.wrapped_key)])
      const ids = [
        await writeSecret(plinth, 'x', undefined, stranger),
        await writeSecret(plinth, 'y', undefined, retiredRing),
      ]
      const plain = await writeSecret(plinth, 'z')
      await sql`update test_secrets set secret = 'not encrypted' where id = ${plain}`.execute(
        plinth.db.kysely,
      )
      const status = await keyStatus(plinth.db.kysely, store, columns)
      assert.equal(status.keys.find((k) => k.id === stranger.keyId)?.state, 'unknown')
      assert.equal(status.columns.find((c) => c.table === 'test_secrets')?.byKey.unreadable, 1)
      assert.equal(status.warnings.length, 3, status.warnings.join('\n'))
      assert.match(
        status.warnings.join('\n'),
        /retired key .* still has 1 value.*plinth keys rotate --resume/,
      )
      assert.match(status.warnings.join('\n'), /name key .* not in encryption_keys/)
      assert.match(status.warnings.join('\n'), /1 value\(s\) are in no keyring format/)

      // --resume rescues the value under the retired key (rotation can still unwrap it).
      const result = await rotateKeys(
        { db: plinth.db.kysely, store, columns, logger: captureLogs(plinth.config).logger },
        { graceMs: 0, resume: true },
      )
      assert.equal(result.createdId, undefined)
      assert.equal(result.moved, 1)
      assert.deepEqual(result.failed.map((f) => f.id).sort(), [ids[0], plain].sort())
      await sql`delete from test_secrets where id in (${ids[0]}, ${plain})`.execute(plinth.db.kysely)
      assert.deepEqual((await keyStatus(plinth.db.kysely, store, columns)).warnings, [])
    })
  })
}

describe('master key at start', () => {
  const dirs: string[] = []
  after(() => {
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true })
  })

  it('production refuses to start without a master key, even past the configuration check', async () => {
    const config = Object.freeze({ ...testConfig(), env: 'production' as const, masterKey: undefined })
    await assert.rejects(createPlinth({ config, logger: captureLogs(config).logger }), {
      code: 'PLINTH_CONFIG_INVALID',
      message: /PLINTH_MASTER_KEY is required in production/,
    })
  })

  it('development generates one into the data directory with a loud warning, and the next start reuses it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'plinth-keys-dev-'))
    dirs.push(dir)
    const env = {
      ...NO_RATE_LIMITS,
      PLINTH_MAX_EVENT_LOOP_DELAY: '0',
      PLINTH_ENV: 'development',
      PLINTH_DATA_DIR: dir,
      PLINTH_LOG_FORMAT: 'json',
    }
    const logs = captureLogs(testConfig(env))
    let plinth = await startTestPlinth({ env, logger: logs.logger, modules: [secretsModule] })
    const keyId = plinth.context.keyring.keyId
    let id: string
    try {
      const warning = logs
        .lines()
        .find((l) => l.level === 'warn' && /generated a development master key/.test(String(l.msg)))
      assert.ok(warning, 'a warning says a key was generated')
      assert.match(String(warning.msg), /set PLINTH_MASTER_KEY in production/)
      assert.ok(existsSync(join(dir, 'master.key')))
      id = await writeSecret(plinth, 'kept across restarts')
    } finally {
      await plinth.close()
    }
    const again = captureLogs(testConfig(env))
    plinth = await startTestPlinth({ env, logger: again.logger, modules: [secretsModule] })
    try {
      assert.equal(plinth.context.keyring.keyId, keyId)
      const [row] = await secretRows(plinth)
      assert.equal(
        await plinth.context.keyring.decryptStringAsync(row!.secret, secretColumn.aad(id)),
        'kept across restarts',
      )
      assert.ok(!again.text().includes('generated a development master key'))
      const master = readFileSync(join(dir, 'master.key'), 'utf8').trim()
      assert.ok(!logs.text().includes(master) && !again.text().includes(master))
    } finally {
      await plinth.close()
    }
  })
})

describe('key material in logs', () => {
  it('neither the master key nor any data key appears in the logs of a start, an enrolment, a rotation and a reload', async () => {
    const config = testConfig({ ...ENV })
    const logs = captureLogs(config, 'trace')
    const plinth = await startTestPlinth({ config, logger: logs.logger, modules: [secretsModule] })
    try {
      const user = await signUp(plinth.app, uniqueEmail('logs'))
      await enrolTotp(plinth.app, user)
      await writeSecret(plinth, 'logged?')
      const store = keyStoreOf(plinth, logs.logger)
      await rotateKeys({ db: plinth.db.kysely, store, columns, logger: logs.logger }, { graceMs: 0 })
      await plinth.context.keyring.refresh()
      await keyStatus(plinth.db.kysely, store, columns)

      const text = logs.text()
      assert.ok(logs.lines().length > 10, 'something was logged')
      const secrets = [MASTER, deriveWrappingKey(MASTER), deriveValueKey(MASTER)]
      for (const row of await store.rows()) {
        secrets.push(unwrapDataKey(store.masters, row.id, row.wrapped_key))
        assert.ok(!text.includes(row.wrapped_key))
      }
      for (const key of secrets)
        for (const enc of ['base64', 'base64url', 'hex'] as const)
          assert.ok(!text.includes(key.toString(enc)), `a key appears in the logs (${enc})`)
    } finally {
      await plinth.close()
    }
  })
})

describe('the legacy keyring before migrations', () => {
  it('works as before data keys while encryption_keys does not exist, and loads data keys once it does', async () => {
    const plinth = await startTestPlinth({ env: { ...ENV, PLINTH_MIGRATE_ON_START: 'false' } })
    try {
      const { keyring } = plinth.context
      assert.equal(keyring.keyId, LEGACY.keyId)
      assert.equal(LEGACY.decryptString(keyring.encrypt('old way', 'x:1'), 'x:1'), 'old way')
      assert.equal(
        createKeyring({
          masterKey: TEST_MASTER_KEY,
          dataDir: 'memory://',
          env: 'test',
          logger: plinth.logger,
        }).keyId,
        LEGACY.keyId,
      )
      await plinth.migrator.up()
      await keyring.refresh()
      assert.notEqual(keyring.keyId, LEGACY.keyId)
      assert.deepEqual(keyring.keyIds, [keyring.keyId, LEGACY.keyId])
    } finally {
      await plinth.close()
    }
  })
})

describe('plinth keys (arguments)', () => {
  async function cli(...argv: string[]) {
    let out = ''
    let err = ''
    const code = await runCli(argv, { out: (t) => (out += `${t}\n`), err: (t) => (err += `${t}\n`) })
    return { code, out, err }
  }
  const cases: [string[], RegExp][] = [
    [['keys'], /missing action/],
    [['keys', 'spin'], /unknown action "spin"/],
    [['keys', 'status', 'extra'], /"status" takes no arguments/],
    [['keys', 'status', '--batch-size', '3'], /--batch-size goes with "rotate", not "status"/],
    [['keys', 'rewrap', '--resume'], /--resume goes with "rotate", not "rewrap"/],
    [['keys', 'rotate', '--print'], /Unknown option '--print'/],
    [['keys', 'rotate', '--batch-size', '0'], /--batch-size takes a whole number from 1 to 10000/],
    [['keys', 'rotate', '--batch-size', '2x'], /--batch-size takes a whole number/],
    [['keys', 'rotate', '--force'], /Unknown option '--force'/],
  ]
  for (const [argv, pattern] of cases) {
    it(`${argv.join(' ')} exits 2 with the usage`, async () => {
      const r = await cli(...argv)
      assert.equal(r.code, 2, r.out + r.err)
      assert.match(r.err, pattern)
      assert.match(r.err, /Usage: plinth keys/)
    })
  }
  it('reports unreadable values, keys left in use and a rotation that did not settle, exiting 1', () => {
    const lines: string[] = []
    const io = { out: (t: string) => lines.push(t), err: (t: string) => lines.push(`E ${t}`) }
    const failed = Array.from({ length: 22 }, (_, i) => ({
      table: 't',
      column: 'c',
      id: `${i}`,
      keyId: i ? 'aa' : null,
    }))
    const base = { activeId: 'bb', moved: 3, failed: [], retired: [], remaining: {}, converged: true }
    assert.equal(reportRotation(base, io), 0)
    assert.equal(reportRotation({ ...base, failed, remaining: { aa: 21 } }, io), 1)
    assert.equal(reportRotation({ ...base, converged: false }, io), 1)
    const text = lines.join('\n')
    assert.match(text, /^done: 3 value\(s\) re-encrypted; active key bb$/m)
    assert.match(text, /^E unreadable: t\.c 0 \(key none\)$/m)
    assert.match(text, /^E … and 2 more$/m)
    assert.match(text, /not retired, still in use: aa \(21\)\. Fix or delete/)
    assert.match(text, /kept appearing after the grace period.*nothing was retired/)
    assert.equal(
      formatEvent({ type: 'batch', table: 't', column: 'c', moved: 5, failed: 1, conflicts: 2 }),
      't.c: 5 re-encrypted, 1 unreadable, 2 changed meanwhile (next pass)',
    )
    assert.equal(formatEvent({ type: 'started', activeId: 'bb', retiringIds: [] }), 'resuming: active key bb')
    assert.equal(
      formatEvent({ type: 'waiting', ms: 1500 }),
      'waiting 2s for every replica to load the active key, then sweeping again…',
    )
    const status = formatStatus({
      keys: [{ id: 'cc', state: 'unknown', legacy: false, createdAt: null, retiredAt: null, values: 1 }],
      columns: [{ table: 't', column: 'c', total: 1, byKey: { cc: 1 } }],
      unfinished: true,
      warnings: ['look'],
    })
    assert.match(status, /^ {2}unknown {3}cc +1 value\(s\) {2}$/m)
    assert.match(status, /^ {2}t\.c +1 {2}cc: 1$/m)
    assert.match(status, /^Rotation unfinished: run "plinth keys rotate"/m)
    assert.match(status, /^warning: look$/m)
  })

  it('keys --help describes rotation, status and rewrap', async () => {
    const r = await cli('keys', '--help')
    assert.equal(r.code, 0)
    assert.match(r.out, /rotate[\s\S]*status[\s\S]*rewrap/)
    assert.match(r.out, /key-rotation\.md/)
  })
})

describe('plinth keys on postgres, and changing the master key', { skip: await skipUnlessPostgres() }, () => {
  let testDb: TestDatabase
  const M2 = randomBytes(32).toString('base64')
  const base = () => ({
    PLINTH_ENV: 'test',
    PLINTH_LOG_LEVEL: 'silent',
    DATABASE_URL: testDb.url,
    PLINTH_KEYS_REFRESH: '1s',
  })
  // A database per test: the first one's rotation retires the legacy key the second one needs.
  beforeEach(async () => {
    testDb = await createTestDatabase()
  })
  afterEach(() => testDb?.drop())
  const start = (env: Record<string, string>) =>
    startTestPlinth({ env: { ...base(), ...env }, modules: [secretsModule] })

  it('status needs the migrations; rotate and status then work from the command line', async () => {
    const env = { ...base(), PLINTH_MASTER_KEY: TEST_MASTER_KEY }
    let r = await spawnCli(['keys', 'status'], env)
    assert.equal(r.code, 1)
    assert.match(r.err, /migration\(s\) pending: run "plinth migrate up" first/)
    assert.equal((await spawnCli(['migrate', 'up'], env)).code, 0)

    r = await spawnCli(['keys', 'status', '--json'], env)
    assert.equal(r.code, 0, r.err)
    const before = JSON.parse(r.out) as KeyStatus
    assert.deepEqual(
      before.keys.map((k) => [k.id, k.state]),
      [[LEGACY.keyId, 'legacy']],
    )
    assert.match(before.warnings.join('\n'), /no active data key yet/)

    const started = Date.now()
    r = await spawnCli(['keys', 'rotate', '--batch-size', '10'], env)
    assert.equal(r.code, 0, r.err)
    assert.match(r.out, /^new active key [0-9a-f]{16}$/m)
    assert.match(r.out, /waiting \d+s for every replica to load the active key/)
    assert.match(r.out, new RegExp(`^retired ${LEGACY.keyId}$`, 'm'))
    assert.match(r.out, /^done: 0 value\(s\) re-encrypted; active key [0-9a-f]{16}$/m)
    assert.ok(Date.now() - started >= 2000, 'it waited 2 x PLINTH_KEYS_REFRESH')

    r = await spawnCli(['keys', 'rotate', '--resume'], env)
    assert.equal(r.code, 0, r.err)
    assert.match(r.out, /^resuming: active key [0-9a-f]{16}$/m)

    r = await spawnCli(['keys', 'status'], env)
    assert.equal(r.code, 0, r.err)
    assert.match(r.out, /^Keys:\n {2}active {4}[0-9a-f]{16} +0 value\(s\) {2}created /)
    assert.match(r.out, new RegExp(`retired {3}${LEGACY.keyId} .*\\(legacy\\)`))
    assert.match(r.out, /^Columns:\n(.*\n)* {2}totp_credentials\.secret_ciphertext +0/m)
    assert.doesNotMatch(r.out, /unfinished|warning/)

    r = await spawnCli(['keys', 'rewrap'], env)
    assert.equal(r.code, 1)
    assert.match(r.err, /PLINTH_MASTER_KEY_PREVIOUS is not set/)
    assert.ok(!(r.out + r.err).includes(TEST_MASTER_KEY))
  })

  it('a new master key needs the previous one until `plinth keys rewrap`; legacy values under the old one are kept', async () => {
    // A value under the data key, and a TOTP secret under the old master's legacy key (from before data keys).
    let plinth = await start({ PLINTH_MASTER_KEY: TEST_MASTER_KEY })
    const email = uniqueEmail('rewrap')
    const secret = 'JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP'
    const id = await writeSecret(plinth, 'data-key value')
    try {
      const user = await signUp(plinth.app, email)
      await legacyTotp(plinth, user.userId, secret)
    } finally {
      await plinth.close()
    }
    const readBoth = async (p: TestPlinth, offsetMs: number) => {
      const [row] = await secretRows(p)
      assert.equal(
        await p.context.keyring.decryptStringAsync(row!.secret, secretColumn.aad(id)),
        'data-key value',
      )
      assert.equal(await signInWithTotp(p, email, secret, offsetMs), 200)
    }

    await assert.rejects(start({ PLINTH_MASTER_KEY: M2 }), {
      code: 'PLINTH_CONFIG_INVALID',
      message: /wrapped under another master key.*PLINTH_MASTER_KEY_PREVIOUS.*plinth keys rewrap/,
    })

    const both = { ...base(), PLINTH_MASTER_KEY: M2, PLINTH_MASTER_KEY_PREVIOUS: TEST_MASTER_KEY }
    plinth = await start({ ...both, ...NO_RATE_LIMITS })
    try {
      await readBoth(plinth, 0)
    } finally {
      await plinth.close()
    }

    const r = await spawnCli(['keys', 'rewrap'], both)
    assert.equal(r.code, 0, r.err)
    assert.match(r.out, /^re-wrapped 1 data key\(s\) under the current master key: [0-9a-f]{16}$/m)
    assert.match(r.out, new RegExp(`kept the previous master key's legacy key ${LEGACY.keyId}`))
    assert.ok(!(r.out + r.err).includes(M2) && !(r.out + r.err).includes(TEST_MASTER_KEY))
    assert.match(
      (await spawnCli(['keys', 'rewrap'], both)).out,
      /already wrapped under the current master key/,
    )

    plinth = await start({ PLINTH_MASTER_KEY: M2, ...NO_RATE_LIMITS })
    try {
      await readBoth(plinth, 30_000)
      const store = keyStoreOf(plinth)
      for (const row of await store.rows())
        assert.equal(wrappingKeyIdOf(row.wrapped_key), wrappingKeyId(Buffer.from(M2, 'base64')))
      const status = await keyStatus(plinth.db.kysely, store, columns)
      assert.equal(status.keys.find((k) => k.id === LEGACY.keyId)?.state, 'retiring')
      assert.equal(status.unfinished, true)
      // The kept legacy key makes the next rotation one to finish: it moves the value and retires the key.
      const result = await rotateKeys(
        { db: plinth.db.kysely, store, columns, logger: plinth.logger },
        { graceMs: 0 },
      )
      assert.equal(result.createdId, undefined)
      assert.equal(result.moved, 1)
      assert.ok(result.retired.includes(LEGACY.keyId))
      assert.deepEqual(result.remaining, {})
    } finally {
      await plinth.close()
    }
  })
})

describe('plinth keys on the embedded database', () => {
  const dir = mkdtempSync(join(tmpdir(), 'plinth-keys-cli-'))
  after(() => rmSync(dir, { recursive: true, force: true }))

  it('rotates without waiting for replicas (there are none) and reports status', async () => {
    const env = { PLINTH_ENV: 'test', PLINTH_DATA_DIR: dir, PLINTH_LOG_LEVEL: 'silent' }
    assert.equal((await spawnCli(['migrate', 'up'], env)).code, 0)
    let r = await spawnCli(['keys', 'rotate'], env)
    assert.equal(r.code, 0, r.err)
    assert.doesNotMatch(r.out, /waiting/)
    r = await spawnCli(['keys', 'rotate'], env)
    assert.equal(r.code, 0, r.err)
    const [, previous] = /retiring ([0-9a-f]{16})/.exec(r.out) ?? []
    assert.ok(previous, r.out)
    assert.match(r.out, new RegExp(`^retired ${previous}$`, 'm'))
    r = await spawnCli(['keys', 'status', '--json'], env)
    const status = JSON.parse(r.out) as KeyStatus
    assert.deepEqual(
      status.keys.map((k) => k.state),
      ['active', 'retired', 'retired'],
    )
  })
})

describe('damaged key rows', () => {
  it('refuses an altered active key, skips an unusable retired one when sweeping, and needs an active key', async () => {
    const plinth = await startTestPlinth({ env: ENV, modules: [secretsModule] })
    try {
      const logs = captureLogs(plinth.config)
      const store = keyStoreOf(plinth, logs.logger)
      const { keyring } = plinth.context
      const good = keyring.keyId
      // A retired row whose wrapped key belongs to another id: rotation says so and goes on.
      const other = keyringFromKeys([randomBytes(32)])
      const [active] = await store.rows()
      await plinth.db.kysely
        .insertInto('encryption_keys')
        .values({
          id: other.keyId,
          wrapped_key: active!.wrapped_key,
          state: 'retired',
          retired_at: new Date(),
        })
        .execute()
      const result = await rotateKeys(
        { db: plinth.db.kysely, store, columns, logger: logs.logger },
        { graceMs: 0 },
      )
      assert.equal(result.converged, true)
      const warning = logs
        .lines()
        .find((l) => l.msg === 'a data key cannot be unwrapped; values under it will not move')
      assert.equal(warning?.keyId, other.keyId)

      // The active row altered: reloading refuses, and the keys already loaded stay in use.
      await sql`update encryption_keys set wrapped_key = ${active!.wrapped_key} where state = 'active'`.execute(
        plinth.db.kysely,
      )
      await assert.rejects(keyring.refresh(), {
        code: 'PLINTH_CONFIG_INVALID',
        message: /cannot be unwrapped/,
      })
      assert.equal(keyring.keyId, good, 'the keys loaded before stay in use')
      assert.equal(keyring.keyIdOf(keyring.encrypt('still works', 'x:1')), keyring.keyId)

      await sql`delete from encryption_keys`.execute(plinth.db.kysely)
      await assert.rejects(store.loadKeyring(), { message: /No active data key/ })
      await assert.rejects(store.sweepKeyring(), { message: /No active data key/ })
    } finally {
      await plinth.close()
    }
  })
})
