import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { pbkdf2 } from 'node:crypto'
import { once } from 'node:events'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { after, describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import pino from 'pino'
import {
  createLogger,
  isoTime,
  LOG_BATCH_BYTES,
  LOG_FLUSH_MS,
  logDestination,
  redactDeep,
  scrubText,
} from './logger.ts'

describe('redactDeep', () => {
  it('replaces sensitive fields at any depth and keeps the rest', () => {
    const body = {
      email: 'a@example.com',
      password: 'hunter2',
      profile: { name: 'A', credentials: { apiKey: 'k1', note: 'ok' } },
      list: [{ token: 't1', id: 1 }],
      newPassword: 'p2',
      totpCode: '123456',
    }
    assert.deepEqual(redactDeep(body), {
      email: 'a@example.com',
      password: '[redacted]',
      profile: { name: 'A', credentials: '[redacted]' },
      list: [{ token: '[redacted]', id: 1 }],
      newPassword: '[redacted]',
      totpCode: '[redacted]',
    })
    assert.equal(body.password, 'hunter2', 'the original is untouched')
  })

  it('returns an object with nothing to hide as is, and keeps look-alike keys readable', () => {
    const line = {
      method: 'GET',
      route: '/x',
      statusCode: 200,
      tokenId: 't_1',
      passwordChangedAt: 'then',
      mfaPassed: true,
    }
    assert.equal(redactDeep(line), line)
    const withSecrets = { sessionToken: 's', nested: [{ recoveryCodes: ['a'] }], err: new Error('kept') }
    const out = redactDeep(withSecrets)
    assert.deepEqual(out.nested, [{ recoveryCodes: '[redacted]' }])
    assert.equal(out.sessionToken, '[redacted]')
    assert.equal(out.err, withSecrets.err, "errors go to pino's serializer untouched")
  })

  it('redacts second factors and every credential-shaped field in bodies, whatever the route and case', () => {
    const line = {
      code: 'PLINTH_AUTH_MFA_INVALID',
      err: { code: '23505' },
      body: {
        challenge: 'plc_x',
        code: '123456',
        CODES: ['111111'],
        recoveryCode: 'abcd-efgh-jkmn-pqrs',
        nested: [{ Code: '654321', pin: '1234', OTP: '1', mfaCode: '2', backupCodes: ['3'] }],
        currentPassword: 'p',
        NEWPASSWORD: 'p',
        Secret: 's',
        token: 't',
        passcode: 'x',
        name: 'kept',
      },
    }
    assert.deepEqual(redactDeep(line), {
      code: 'PLINTH_AUTH_MFA_INVALID',
      err: { code: '23505' },
      body: {
        challenge: '[redacted]',
        code: '[redacted]',
        CODES: '[redacted]',
        recoveryCode: '[redacted]',
        nested: [
          {
            Code: '[redacted]',
            pin: '[redacted]',
            OTP: '[redacted]',
            mfaCode: '[redacted]',
            backupCodes: '[redacted]',
          },
        ],
        currentPassword: '[redacted]',
        NEWPASSWORD: '[redacted]',
        Secret: '[redacted]',
        token: '[redacted]',
        passcode: '[redacted]',
        name: 'kept',
      },
    })
  })

  it('stops at a bounded depth', () => {
    let deep: Record<string, unknown> = { leaf: 1 }
    for (let i = 0; i < 20; i++) deep = { next: deep }
    assert.match(JSON.stringify(redactDeep(deep)), /\[truncated\]/)
  })
})

/** A JSON logger at info whose lines are kept in `lines`, as written. */
function capturingLogger(env: 'test' | 'development' | 'staging' | 'production' = 'test') {
  const lines: string[] = []
  const stream = new Writable({
    write(chunk, _e, done) {
      lines.push(String(chunk))
      done()
    },
  })
  return { lines, log: createLogger({ env, logLevel: 'info', logFormat: 'json' }, stream) }
}

describe('createLogger', () => {
  it('writes JSON lines with a string level, ISO time and redacted credentials', () => {
    const { lines, log } = capturingLogger()
    log.info(
      { req: { headers: { authorization: 'Bearer abc', cookie: 'sid=1' } }, user: { password: 'pw' } },
      'hello',
    )
    const line = JSON.parse(lines[0]!)
    assert.equal(line.level, 'info')
    assert.match(line.time, /^\d{4}-\d{2}-\d{2}T/)
    assert.equal(line.msg, 'hello')
    assert.equal(line.req.headers.authorization, '[redacted]')
    assert.equal(line.req.headers.cookie, '[redacted]')
    assert.equal(line.user.password, '[redacted]')
    assert.doesNotMatch(lines[0]!, /abc|sid=1|"pw"/)
  })

  it("redacts an error's own fields and keeps its class, message, stack and cause", () => {
    const { lines, log } = capturingLogger()
    class UpstreamError extends Error {}
    const cause = new Error('socket hang up')
    const err = Object.assign(new UpstreamError('upstream refused', { cause }), {
      status: 502,
      token: 'tok-secret',
      request: { url: '/v1/x', headers: { authorization: 'Bearer auth-secret', accept: 'json' } },
    })
    log.error({ err }, 'call failed')
    log.error(err, 'call failed again')
    const plain = new Error('nothing to hide')
    assert.equal(redactDeep({ err: plain }).err, plain, 'an error with nothing to hide is not copied')
    for (const line of lines.map((l) => JSON.parse(l))) {
      assert.equal(line.err.type, 'UpstreamError')
      assert.equal(line.err.message, 'upstream refused: socket hang up')
      assert.match(line.err.stack, /^Error: upstream refused\n\s+at .*logger\.test\.ts/)
      assert.match(line.err.stack, /\ncaused by: Error: socket hang up\n/)
      assert.equal(line.err.status, 502)
      assert.equal(line.err.token, '[redacted]')
      assert.equal(line.err.request.headers.authorization, '[redacted]')
      assert.equal(line.err.request.headers.accept, 'json')
    }
    assert.equal(lines.length, 2)
    assert.doesNotMatch(lines.join(''), /secret/)
    assert.equal(err.token, 'tok-secret', 'the error itself is left as it was')
  })

  it("redacts a child logger's bindings as its lines, at any depth of children", () => {
    const { lines, log } = capturingLogger()
    const child = log.child({ requestId: 'r-1', token: 'tok-secret', session: { password: 'pw-secret' } })
    child.info('first')
    child.child({ tokenId: 't-1' }).child({ apiKey: 'key-secret' }, { level: 'debug' }).debug('second')
    const [first, second] = lines.map((l) => JSON.parse(l))
    assert.equal(first.requestId, 'r-1')
    assert.equal(first.token, '[redacted]')
    assert.equal(first.session.password, '[redacted]')
    assert.equal(second.requestId, 'r-1')
    assert.equal(second.tokenId, 't-1')
    assert.equal(second.apiKey, '[redacted]')
    assert.equal(second.level, 'debug')
    assert.doesNotMatch(lines.join(''), /secret/)
  })

  it('masks URL passwords and Plinth secrets in free text: messages, error messages and stacks, ordinary values', () => {
    const { lines, log } = capturingLogger('production')
    const reset = `plr_${'A1b2-C3d4_'.repeat(4)}xyz`
    const session = `pls_${'Zz9-'.repeat(10)}abc`
    log.warn(
      { url: 'https://alice:hook-pass@hooks.example/alert?x=1', target: 'postgres://postgres@db:5432/app' },
      `delivery to smtps://mailer:smtp-pass@smtp.example:465 failed for ${reset}`,
    )
    log.error(
      { err: new Error(`session ${session} refused by https://u:err-pass@api.example`) },
      'call failed',
    )
    const [first, second] = lines.map((l) => JSON.parse(l))
    assert.equal(first.url, 'https://alice:[redacted]@hooks.example/alert?x=1')
    assert.equal(first.target, 'postgres://postgres@db:5432/app', 'a URL without a password is kept whole')
    assert.equal(
      scrubText('postgres://postgres:****@db/app'),
      'postgres://postgres:****@db/app',
      'masked already',
    )
    assert.equal(first.msg, 'delivery to smtps://mailer:[redacted]@smtp.example:465 failed for [redacted]')
    assert.equal(second.err.message, 'session [redacted] refused by https://u:[redacted]@api.example')
    assert.match(
      second.err.stack,
      /^Error: session \[redacted\] refused by https:\/\/u:\[redacted\]@api\.example\n/,
    )
    assert.doesNotMatch(lines.join(''), /-pass|plr_|pls_/)
    // A longer run of the same characters is not a secret of Plinth's, and stays.
    assert.equal(scrubText(`"plt_${'a'.repeat(50)}"`, true), `"plt_${'a'.repeat(50)}"`)
  })

  it("development and test keep Plinth's secrets readable (the captured mail's link), not URL passwords", () => {
    const { lines, log } = capturingLogger('development')
    const link = `http://localhost:3000/reset?token=plr_${'k'.repeat(43)}`
    log.info(
      { text: `Reset: ${link}`, smtp: 'smtp://me:dev-pass@localhost:1025' },
      'mail captured (no SMTP_URL)',
    )
    const line = JSON.parse(lines[0]!)
    assert.equal(line.text, `Reset: ${link}`)
    assert.equal(line.smtp, 'smtp://me:[redacted]@localhost:1025')
  })
})

describe('isoTime', () => {
  it('formats as pino.stdTimeFunctions.isoTime does, second boundaries and small milliseconds included', (t) => {
    for (const now of [
      0, 5, 42, 999, 1000, 1_733_480_000_007, 1_733_480_000_099, 1_733_480_000_100, 1_733_480_059_999,
      1_733_480_060_000, 253_402_300_799_999,
    ]) {
      t.mock.method(Date, 'now', () => now)
      assert.equal(isoTime(), pino.stdTimeFunctions.isoTime(), `at ${now}`)
      t.mock.restoreAll()
    }
    assert.equal(isoTime().length, pino.stdTimeFunctions.isoTime().length)
  })
})

describe('logDestination', () => {
  const dir = mkdtempSync(join(tmpdir(), 'plinth-log-'))
  after(() => rmSync(dir, { recursive: true, force: true }))

  it('writes a lone line within its flush interval, though the batch is far from full', async () => {
    const file = join(dir, 'quiet.ndjson')
    const stream = logDestination(file)
    const log = createLogger({ env: 'test', logLevel: 'info', logFormat: 'json' }, stream)
    log.info('one line on a quiet instance')
    const deadline = Date.now() + 20 * LOG_FLUSH_MS
    while (!existsSync(file) || !readFileSync(file, 'utf8').includes('one line on a quiet instance')) {
      assert.ok(Date.now() < deadline, `not written within ${20 * LOG_FLUSH_MS} ms`)
      await sleep(LOG_FLUSH_MS / 5)
    }
    ;(stream as unknown as { end(): void }).end()
  })

  it('writes every line intact and in order across batches: multi-byte text, lines longer than a batch', async () => {
    const file = join(dir, 'many.ndjson')
    const stream = logDestination(file)
    const log = createLogger({ env: 'test', logLevel: 'info', logFormat: 'json' }, stream)
    // Runs of lines with three UTF-8 bytes per character fill a batch unevenly.
    const cjk = '日本語'.repeat(LOG_BATCH_BYTES / 32)
    const texts = ['plain', 'é à ü', cjk, cjk, cjk, cjk, cjk, 'emoji 🚀🎉', 'x'.repeat(3 * LOG_BATCH_BYTES)]
    // Enough lines to fill several batches, written before the file has opened and after.
    const count = 300
    for (let i = 0; i < count; i++) {
      log.info({ i, text: texts[i % texts.length] }, 'line')
      if (i === 100) await once(stream as unknown as NodeJS.EventEmitter, 'ready')
    }
    // end() hands over what is pending; sonic-boom closes the file once all of it is written.
    const closed = once(stream as unknown as NodeJS.EventEmitter, 'close')
    ;(stream as unknown as { end(): void }).end()
    await closed
    const lines = readFileSync(file, 'utf8').trim().split('\n')
    assert.equal(lines.length, count)
    lines.forEach((line, i) => {
      const parsed = JSON.parse(line) as { i: number; text: string }
      assert.equal(parsed.i, i)
      assert.equal(parsed.text, texts[i % texts.length])
    })
  })

  it('exits cleanly, its lines written, when the process exits before the log file has opened', () => {
    const file = join(dir, 'not-ready.ndjson')
    const script = `
      import { createLogger, logDestination } from ${JSON.stringify(new URL('./logger.ts', import.meta.url).href)}
      // No wait for 'ready': the exit comes in the same tick, before the file's open has returned.
      const stream = logDestination(${JSON.stringify(file)})
      const log = createLogger({ env: 'test', logLevel: 'info', logFormat: 'json' }, stream)
      for (let i = 0; i < 3; i++) log.info({ i }, 'early line')
      process.exit(3)`
    const run = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' })
    assert.doesNotMatch(run.stderr, /not ready/)
    assert.equal(run.status, 3, run.stderr)
    const lines = readFileSync(file, 'utf8').trim().split('\n')
    assert.deepEqual(
      lines.map((l) => JSON.parse(l).i),
      [0, 1, 2],
    )
  })

  it('writes a batch synchronously on flushSync (at exit), not by an asynchronous write an exit does not wait for', async () => {
    const file = join(dir, 'flush-sync.ndjson')
    const stream = logDestination(file)
    await once(stream as unknown as NodeJS.EventEmitter, 'ready')
    const log = createLogger({ env: 'test', logLevel: 'info', logFormat: 'json' }, stream)
    for (let i = 0; i < 5; i++) log.info({ i }, 'line')
    // libuv's thread pool kept busy: an asynchronous write could not run before the read below
    // (as at an exit, which does not wait for one).
    const threads = Number(process.env.UV_THREADPOOL_SIZE ?? 4)
    const busy = Array.from(
      { length: threads },
      () => new Promise((done) => pbkdf2('busy', 'pool', 400_000, 32, 'sha256', done)),
    )
    ;(stream as unknown as { flushSync(): void }).flushSync()
    // Read in the same tick: only what was written synchronously is in the file.
    assert.deepEqual(
      readFileSync(file, 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l).i),
      [0, 1, 2, 3, 4],
    )
    await Promise.all(busy)
    ;(stream as unknown as { end(): void }).end()
  })

  it('writes every buffered line when the process exits, the fatal path included', () => {
    const file = join(dir, 'exit.ndjson')
    const script = `
      import { pbkdf2 } from 'node:crypto'
import { once } from 'node:events'
      import { createLogger, logDestination } from ${JSON.stringify(new URL('./logger.ts', import.meta.url).href)}
      const stream = logDestination(${JSON.stringify(file)})
      // A file opens asynchronously (stdout, the production destination, is open from the start).
      await once(stream, 'ready')
      const log = createLogger({ env: 'test', logLevel: 'info', logFormat: 'json' }, stream)
      // Fewer bytes than a batch: nothing is written before the exit, all of it at the exit.
      for (let i = 0; i < 10; i++) log.info({ i }, 'line')
      log.fatal('uncaught error, exiting')
      process.exit(1)`
    const run = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' })
    assert.equal(run.status, 1, run.stderr)
    const lines = readFileSync(file, 'utf8').trim().split('\n')
    assert.equal(lines.length, 11)
    assert.deepEqual(
      lines.slice(0, 10).map((l) => JSON.parse(l).i),
      [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    )
    assert.equal(JSON.parse(lines.at(-1)!).msg, 'uncaught error, exiting')
  })
})
