import assert from 'node:assert/strict'
import { Writable } from 'node:stream'
import { describe, it } from 'node:test'
import { createLogger, redactDeep } from './logger.ts'

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

describe('createLogger', () => {
  it('writes JSON lines with a string level, ISO time and redacted credentials', () => {
    const lines: string[] = []
    const stream = new Writable({
      write(chunk, _e, done) {
        lines.push(String(chunk))
        done()
      },
    })
    const log = createLogger({ env: 'test', logLevel: 'info', logFormat: 'json' }, stream)
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
})
