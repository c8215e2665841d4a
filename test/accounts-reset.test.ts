import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { after, before, describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import type { InjectOptions } from 'fastify'
import pg from 'pg'
import { accountsServices } from '../src/modules/accounts/accounts.wiring.ts'
import { HARD_LOCK_UNTIL } from '../src/modules/accounts/lockout.ts'
import { generateTotp } from '../src/modules/accounts/totp.ts'
import {
  bearer,
  enrolTotp,
  login,
  loginResponse,
  meStatus,
  NO_RATE_LIMITS,
  OTHER_PASSWORD,
  PASSWORD,
  recordEvents,
  signUp,
  uniqueEmail,
  waitFor,
} from './helpers/accounts.ts'
import { assertProblem } from './helpers/assert-problem.ts'
import { captureLogs } from './helpers/log-capture.ts'
import { skipUnlessPostgres } from './helpers/services.ts'
import { startSmtp, type TestSmtpServer } from './helpers/smtp-server.ts'
import { testConfig } from './helpers/test-config.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'

const PUBLIC_URL = 'https://plinth.example.test'
const RESET_LINK = new RegExp(`${PUBLIC_URL}/reset-password\\?token=(plr_[A-Za-z0-9_-]{43})`)
const NEW_PASSWORD = 'copper-meadow-signal-58'

describe('accounts: password reset by e-mail, and what the logs never hold', {
  skip: await skipUnlessPostgres(),
}, () => {
  let plinth: TestPlinth
  let smtp: TestSmtpServer
  const logs = captureLogs(testConfig(), 'debug')
  /** Every secret this file handles; none may appear in the logs. */
  const secrets = new Set<string>([PASSWORD, OTHER_PASSWORD, NEW_PASSWORD])
  const keep = <T extends string | undefined>(secret: T): T => {
    if (secret) secrets.add(secret)
    return secret
  }

  before(async () => {
    smtp = await startSmtp({ user: 'mailbot', password: randomBytes(12).toString('hex') })
    plinth = await startTestPlinth({
      backend: 'postgres',
      logger: logs.logger,
      // Bodies logged too (redacted): the strictest setting for the scan at the end.
      env: {
        ...NO_RATE_LIMITS,
        SMTP_URL: smtp.url,
        PLINTH_PUBLIC_URL: PUBLIC_URL,
        PLINTH_LOG_BODIES: 'true',
      },
    })
  })
  after(async () => {
    await plinth?.close()
    await smtp?.close()
  })
  const inject = (opts: InjectOptions) => plinth.app.inject(opts)
  const requestReset = (email: string) =>
    inject({ method: 'POST', url: '/api/v1/auth/password-reset', payload: { email } })
  const confirmReset = (token: string, password: string) =>
    inject({ method: 'POST', url: '/api/v1/auth/password-reset/confirm', payload: { token, password } })
  const mailsTo = (email: string) => smtp.received.filter((m) => m.rcptTo.includes(email))
  /** Asks for a link and returns the token from the mail that arrives (sent in the background). */
  const resetToken = async (email: string) => {
    const before = mailsTo(email).length
    assert.equal((await requestReset(email)).statusCode, 202)
    const mail = await waitFor(`the reset mail to ${email}`, async () => mailsTo(email)[before])
    return keep(RESET_LINK.exec(mail.body)?.[1])!
  }

  it('answers 202 for known and unknown addresses alike; only the known one gets mail', async () => {
    const rec = recordEvents(plinth)
    const email = uniqueEmail('known')
    const { userId } = await signUp(plinth.app, email)
    const unknown = uniqueEmail('unknown')
    const a = await requestReset(email)
    const b = await requestReset(unknown)
    assert.equal(a.statusCode, 202)
    assert.equal(b.statusCode, 202)
    assert.equal(a.body, b.body)
    const mail = await waitFor('the reset mail', async () => mailsTo(email)[0])
    assert.equal(mail.headers.get('subject'), 'Reset your Plinth password')
    const token = keep(RESET_LINK.exec(mail.body)?.[1])
    assert.ok(token, mail.body)
    // The token is stored only as a hash: the outbox's copy of the mail must not hold it either.
    const stored = await waitFor('the outbox row', () =>
      plinth.db.kysely
        .selectFrom('mail_outbox')
        .select(['text_body', 'status'])
        .where('to_address', '=', email)
        .where('status', '=', 'sent')
        .executeTakeFirst(),
    )
    assert.ok(!stored.text_body.includes(token), stored.text_body)
    assert.match(stored.text_body, /reset-password\?token=\[link secret removed\]/)
    // The work after both answers has finished: the unknown address got nothing (not: not yet).
    await accountsServices(plinth.context).accounts.drain()
    assert.equal(mailsTo(unknown).length, 0)
    const requested = (await rec.settled()).filter((e) => e.type === 'password:reset-requested')
    rec.stop()
    assert.deepEqual(
      requested.map((e) => [e.actor, e.target, e.requestId]),
      [[{ type: 'anonymous' }, { type: 'user', id: userId }, a.headers['x-request-id']]],
    )
  })

  it('answers before any work that depends on the address: known and unknown alike, even while the users table is locked', async () => {
    const email = uniqueEmail('timing-known')
    await signUp(plinth.app, email)
    const unknown = uniqueEmail('timing-unknown')
    // Another connection holds the users table: any look-up of the address before answering would
    // wait for it. Both answers must come anyway (the deadline is generous, not a timing assert).
    const blocker = new pg.Client({ connectionString: plinth.config.databaseUrl })
    await blocker.connect()
    try {
      await blocker.query('begin')
      await blocker.query('lock table users in access exclusive mode')
      const deadline = (ms: number) =>
        sleep(ms).then(() => {
          throw new Error(`no answer within ${ms} ms: the reset request waited on the address's look-up`)
        })
      const answers = await Promise.race([
        Promise.all([requestReset(email), requestReset(unknown)]),
        deadline(15_000),
      ])
      assert.deepEqual(
        answers.map((r) => r.statusCode),
        [202, 202],
      )
      assert.equal(answers[0].body, answers[1].body)
    } finally {
      await blocker.query('rollback').catch(() => {})
      await blocker.end()
    }
    // Once the table is free, the known address gets its link (and only it).
    await waitFor('the reset mail', async () => mailsTo(email)[0])
    assert.equal(mailsTo(unknown).length, 0)
  })

  it('the link sets a new password once (it must pass the policy), ends every session and clears a lockout', async () => {
    const rec = recordEvents(plinth)
    const email = uniqueEmail('reset')
    const one = await signUp(plinth.app, email)
    const two = await login(plinth.app, email)
    keep(one.token)
    keep(two.token)
    for (let i = 0; i < 5; i++) await loginResponse(plinth.app, email, `forgotten-${i}`)
    assertProblem(await loginResponse(plinth.app, email), 429, 'PLINTH_AUTH_LOCKED')
    const older = await resetToken(email)
    const token = await resetToken(email)

    assertProblem(await confirmReset(token, 'password1'), 422, 'PLINTH_AUTH_WEAK_PASSWORD')
    assertProblem(await confirmReset(token, email), 422, 'PLINTH_AUTH_WEAK_PASSWORD')
    const ok = await confirmReset(token, NEW_PASSWORD)
    assert.equal(ok.statusCode, 204, ok.body)
    assertProblem(await confirmReset(token, 'another-new-password-3'), 400, 'PLINTH_AUTH_TOKEN_INVALID')
    assertProblem(await confirmReset(older, 'another-new-password-3'), 400, 'PLINTH_AUTH_TOKEN_INVALID')
    assert.equal(await meStatus(plinth.app, bearer(one.token)), 401)
    assert.equal(await meStatus(plinth.app, bearer(two.token)), 401)
    assertProblem(await loginResponse(plinth.app, email, PASSWORD), 401, 'PLINTH_AUTH_INVALID_CREDENTIALS')
    keep((await login(plinth.app, email, NEW_PASSWORD)).token)

    const [event] = (await rec.settled()).filter((e) => e.type === 'password:reset')
    rec.stop()
    assert.deepEqual(
      [event!.actor, event!.target],
      [
        { type: 'user', id: one.userId },
        { type: 'user', id: one.userId },
      ],
    )
    assert.equal(event!.requestId, ok.headers['x-request-id'])
  })

  it('refuses an expired or malformed link with 400 PLINTH_AUTH_TOKEN_INVALID', async () => {
    const email = uniqueEmail('expired')
    const { userId } = await signUp(plinth.app, email)
    const token = await resetToken(email)
    await plinth.db.kysely
      .updateTable('password_reset_tokens')
      .set({ expires_at: new Date(Date.now() - 1000) })
      .where('user_id', '=', userId)
      .execute()
    assertProblem(await confirmReset(token, NEW_PASSWORD), 400, 'PLINTH_AUTH_TOKEN_INVALID')
    assertProblem(await confirmReset(`${token}x`, NEW_PASSWORD), 400, 'PLINTH_AUTH_TOKEN_INVALID')
    assertProblem(await confirmReset(`pls_${token.slice(4)}`, NEW_PASSWORD), 400, 'PLINTH_AUTH_TOKEN_INVALID')
    await login(plinth.app, email)
  })

  it('locks hard after 100 consecutive failures, whatever the wait, until a password reset', async () => {
    const rec = recordEvents(plinth)
    const email = uniqueEmail('hard')
    const { userId } = await signUp(plinth.app, email)
    await plinth.db.kysely.updateTable('users').set({ failed_logins: 99 }).where('id', '=', userId).execute()
    assertProblem(
      await loginResponse(plinth.app, email, 'the-hundredth-guess'),
      401,
      'PLINTH_AUTH_INVALID_CREDENTIALS',
    )
    const locked = await loginResponse(plinth.app, email)
    assertProblem(locked, 429, 'PLINTH_AUTH_LOCKED')
    assert.ok(
      Number(locked.headers['retry-after']) > 365 * 24 * 3600,
      `Retry-After ${locked.headers['retry-after']}`,
    )
    const row = await plinth.db.kysely
      .selectFrom('users')
      .select('locked_until')
      .where('id', '=', userId)
      .executeTakeFirstOrThrow()
    assert.deepEqual(row.locked_until, HARD_LOCK_UNTIL)
    const [lockout] = (await rec.settled()).filter(
      (e) => e.type === 'login:locked-out' && e.actor.id === userId,
    )
    rec.stop()
    assert.equal(lockout!.details?.failures, 100)

    assert.equal((await confirmReset(await resetToken(email), NEW_PASSWORD)).statusCode, 204)
    keep((await login(plinth.app, email, NEW_PASSWORD)).token)
  })

  it('a whole account flow leaves no password, token, TOTP secret, recovery code or reset token in the logs', async () => {
    const email = uniqueEmail('flow')
    const s = await signUp(plinth.app, email)
    keep(s.token)
    keep(s.csrfToken)
    const created = await inject({
      method: 'POST',
      url: '/api/v1/me/tokens',
      headers: bearer(s.token),
      payload: { name: 'ci', scopes: ['self:read'] },
    })
    const apiToken = keep(created.json().token as string)
    assert.equal(await meStatus(plinth.app, bearer(apiToken)), 200)
    const enrolled = await enrolTotp(plinth.app, s)
    keep(enrolled.secret)
    keep(enrolled.session.token)
    for (const code of enrolled.recoveryCodes) keep(code)
    const challenge = (await loginResponse(plinth.app, email)).json().challenge as string
    const done = await inject({
      method: 'POST',
      url: '/api/v1/auth/mfa',
      payload: { challenge, code: generateTotp(enrolled.secret) },
    })
    keep(done.json().token)
    const viaRecovery = await inject({
      method: 'POST',
      url: '/api/v1/auth/mfa',
      payload: {
        challenge: (await loginResponse(plinth.app, email)).json().challenge,
        recoveryCode: enrolled.recoveryCodes[0],
      },
    })
    keep(viaRecovery.json().token)
    const changed = await inject({
      method: 'POST',
      url: '/api/v1/me/password',
      headers: bearer(done.json().token),
      payload: { currentPassword: PASSWORD, newPassword: OTHER_PASSWORD },
    })
    assert.equal(changed.statusCode, 200, changed.body)
    keep(changed.json().token)
    assert.equal((await confirmReset(await resetToken(email), NEW_PASSWORD)).statusCode, 204)
    const last = await loginResponse(plinth.app, email, 'a-wrong-password-here')
    // The last request's line is written (pino writes asynchronously): the lines before it are too.
    const lastId = String(last.headers['x-request-id'])
    await waitFor('the last request logged', () => logs.text().includes(lastId))
    const text = logs.text()
    assert.ok(text.includes('"request body"') && text.includes('security event'), 'the scan needs the logs')
    const leaked = [...secrets].filter((secret) => text.includes(secret))
    assert.deepEqual(
      leaked.map((secret) => `${secret.slice(0, 6)}…`),
      [],
      'secrets found in the logs',
    )
  })
})
