import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import type { PlinthConfig } from '../src/config/config.schema.ts'
import { createMailer, type MailMessage } from '../src/modules/mail/mailer.ts'
import { isPlinthError } from '../src/shared/errors.ts'
import { type CapturedLogs, captureLogs } from './helpers/log-capture.ts'
import { skipUnlessPostgres } from './helpers/services.ts'
import { closedPort, startSilentServer, startSmtp, type TestSmtpServer } from './helpers/smtp-server.ts'
import { testConfig } from './helpers/test-config.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'

const USER = 'mailbot'
const PASSWORD = 'Pw-q8Zr-smtp-secret'
const credentials = { user: USER, password: PASSWORD }
const FROM = 'Plinth Test <robot@plinth.test>'

const message = (over: Partial<MailMessage> = {}): MailMessage => ({
  to: 'ada@example.test',
  subject: 'Reset your password',
  text: 'Open https://plinth.test/reset?token=tok-7Hq2 within 30 minutes.',
  category: 'password-reset',
  ...over,
})

const outboxRows = (plinth: TestPlinth) =>
  plinth.db.kysely.selectFrom('mail_outbox').selectAll().orderBy('created_at').execute()
const outboxRow = (plinth: TestPlinth, id: string) =>
  plinth.db.kysely.selectFrom('mail_outbox').selectAll().where('id', '=', id).executeTakeFirstOrThrow()

/** Asserts PLINTH_MAIL_UNAVAILABLE whose message and cause leave the SMTP password out. */
function isUnavailableWithoutSecret(err: unknown): boolean {
  assert.ok(isPlinthError(err), `expected a PlinthError, got ${String(err)}`)
  assert.equal(err.code, 'PLINTH_MAIL_UNAVAILABLE')
  assert.equal(err.status, 503)
  const cause = err.cause as Error
  assert.doesNotMatch(`${err.message} ${cause?.message} ${cause?.stack}`, new RegExp(PASSWORD))
  return true
}

for (const backend of ['embedded', 'postgres'] as const) {
  describe(`mail through SMTP on ${backend}`, {
    skip: backend === 'postgres' ? await skipUnlessPostgres() : false,
  }, () => {
    let smtp: TestSmtpServer
    let logs: CapturedLogs
    let plinth: TestPlinth
    before(async () => {
      smtp = await startSmtp(credentials)
      logs = captureLogs(testConfig())
      plinth = await startTestPlinth({
        backend,
        env: { SMTP_URL: smtp.url, PLINTH_MAIL_FROM: FROM },
        logger: logs.logger,
      })
    })
    after(async () => {
      await plinth?.close()
      await smtp?.close()
    })

    it('delivers with AUTH from PLINTH_MAIL_FROM and marks the outbox row sent', async () => {
      const receipt = await plinth.context.mailer.send(message())
      assert.equal(receipt.delivered, 'smtp')
      const mail = smtp.received.at(-1)!
      assert.equal(mail.mailFrom, 'robot@plinth.test')
      assert.deepEqual(mail.rcptTo, ['ada@example.test'])
      assert.equal(mail.headers.get('from'), FROM)
      assert.equal(mail.headers.get('to'), 'ada@example.test')
      assert.equal(mail.headers.get('subject'), 'Reset your password')
      assert.match(mail.body, /Open https:\/\/plinth\.test\/reset\?token=tok-7Hq2 within 30 minutes\./)
      const row = await outboxRow(plinth, receipt.id)
      assert.equal(row.status, 'sent')
      assert.equal(row.attempts, 1)
      assert.equal(row.category, 'password-reset')
      assert.equal(row.text_body, message().text)
      assert.ok(row.sent_at instanceof Date)
      assert.equal(row.last_error, null)
    })

    it('sends the HTML body as an alternative to the text, and parallel sends share the pool', async () => {
      const before = smtp.received.length
      const sends = Array.from({ length: 5 }, (_, i) =>
        plinth.context.mailer.send(
          message({ to: `user${i}@example.test`, html: `<p>Hello <b>${i}</b></p>` }),
        ),
      )
      const receipts = await Promise.all(sends)
      assert.equal(smtp.received.length, before + 5)
      const mail = smtp.received.find((m) => m.rcptTo[0] === 'user3@example.test')!
      assert.match(mail.headers.get('content-type') ?? '', /^multipart\/alternative/)
      assert.match(mail.body, /<p>Hello <b>3<\/b><\/p>/)
      assert.match(mail.body, /token=tok-7Hq2/)
      for (const r of receipts) assert.equal((await outboxRow(plinth, r.id)).status, 'sent')
    })

    it('logs each delivery without the body, the recipient or the SMTP password', () => {
      const sent = logs.lines().filter((l) => l.msg === 'mail sent')
      assert.ok(sent.length >= 6, logs.text())
      assert.equal(sent[0]!.category, 'password-reset')
      for (const secret of ['tok-7Hq2', 'ada@example.test', PASSWORD])
        assert.ok(!logs.text().includes(secret), secret)
    })

    it('closes the SMTP connection pool on shutdown', async () => {
      assert.ok(smtp.openConnections() > 0, 'the pool keeps a connection open between messages')
      await plinth.close()
      for (let i = 0; i < 40 && smtp.openConnections() > 0; i++) await sleep(50)
      assert.equal(smtp.openConnections(), 0)
    })
  })
}

describe('mail when SMTP fails, and without SMTP', () => {
  let plinth: TestPlinth
  before(async () => {
    plinth = await startTestPlinth()
  })
  after(() => plinth?.close())

  /** A mailer on this Plinth's database with its own configuration and captured logs. */
  const mailerWith = (env: Record<string, string>, override: Partial<PlinthConfig> = {}) => {
    const config = { ...testConfig(env), ...override }
    const logs = captureLogs(config)
    return { mailer: createMailer({ config, logger: logs.logger, db: plinth.db }), logs }
  }

  const failures = [
    {
      name: 'the server is down (connection refused): retried, then failed',
      start: async () => ({
        url: `smtp://${USER}:${PASSWORD}@127.0.0.1:${await closedPort()}`,
        close: async () => {},
      }),
      attempts: (n: number) => n > 1,
      reason: /ECONNREFUSED.*gave up after \d+ attempts/,
    },
    {
      name: 'the server accepts the connection but never greets: failed after the timeout',
      start: async () => {
        const silent = await startSilentServer()
        return { url: `smtp://${USER}:${PASSWORD}@127.0.0.1:${silent.port}`, close: silent.close }
      },
      attempts: (n: number) => n >= 1,
      reason: /(ETIMEDOUT|no answer).*gave up after/,
    },
    {
      name: 'the server refuses the credentials: failed at once, without retrying',
      start: async () => {
        const s = await startSmtp({ ...credentials, acceptAuth: false })
        return { url: s.url, close: s.close }
      },
      attempts: (n: number) => n === 1,
      reason: /^EAUTH 535: /,
    },
  ]
  for (const scenario of failures) {
    it(`rejects with PLINTH_MAIL_UNAVAILABLE within the timeout when ${scenario.name}`, async () => {
      const server = await scenario.start()
      const { mailer, logs } = mailerWith({ SMTP_URL: server.url, PLINTH_SMTP_TIMEOUT: '600ms' })
      try {
        const started = performance.now()
        let id = ''
        await assert.rejects(mailer.send(message()), isUnavailableWithoutSecret)
        const elapsed = performance.now() - started
        assert.ok(elapsed < 2500, `settled in ${Math.round(elapsed)} ms`)
        const failedLine = logs.lines().find((l) => l.msg === 'mail delivery failed')
        assert.ok(failedLine, logs.text())
        id = failedLine.mailId as string
        const row = await outboxRow(plinth, id)
        assert.equal(row.status, 'failed')
        assert.ok(scenario.attempts(row.attempts), `attempts: ${row.attempts}`)
        assert.match(row.last_error ?? '', scenario.reason)
        assert.equal(failedLine.reason, row.last_error, 'the log says why, as the row does')
        assert.ok(row.sent_at === null)
        assert.ok(!JSON.stringify(row).includes(PASSWORD), 'the stored error has no password')
        assert.ok(!logs.text().includes(PASSWORD), 'the log has no password')
        assert.ok(!logs.text().includes('tok-7Hq2'), 'the log has no body')
      } finally {
        await mailer.close()
        await server.close()
      }
    })
  }

  it('requires STARTTLS in production for a URL with credentials, so the password never crosses in clear', async () => {
    const smtp = await startSmtp(credentials)
    try {
      const prod = mailerWith({ SMTP_URL: smtp.url, PLINTH_SMTP_TIMEOUT: '600ms' }, { env: 'production' })
      await assert.rejects(prod.mailer.send(message()), isUnavailableWithoutSecret)
      await prod.mailer.close()
      assert.deepEqual(smtp.authAttempts, [], 'no AUTH was attempted over plain text')
      assert.equal(smtp.received.length, 0)
      const optOut = mailerWith({ SMTP_URL: `${smtp.url}?requireTLS=false` }, { env: 'production' })
      assert.equal((await optOut.mailer.send(message())).delivered, 'smtp')
      await optOut.mailer.close()
      assert.equal(smtp.received.length, 1)
    } finally {
      await smtp.close()
    }
  })

  it('without SMTP_URL in test, records the message as logged and logs it, body included, at info', async () => {
    const { mailer, logs } = mailerWith({})
    assert.equal(mailer.canDeliver, true, 'the outbox capture counts as delivered in test')
    const receipt = await mailer.send(message())
    assert.equal(receipt.delivered, 'outbox')
    assert.equal((await outboxRow(plinth, receipt.id)).status, 'logged')
    const line = logs.lines().find((l) => l.msg === 'mail captured (no SMTP_URL)')
    assert.ok(line, logs.text())
    assert.equal(line.level, 'info')
    assert.equal(line.mailId, receipt.id)
    assert.equal(line.to, 'ada@example.test')
    assert.equal(line.subject, 'Reset your password')
    assert.equal(line.text, message().text)
  })

  it('without SMTP_URL in production, records the message as failed, rejects, and logs neither body nor recipient', async () => {
    const { mailer, logs } = mailerWith({}, { env: 'production' })
    assert.equal(mailer.canDeliver, false)
    await assert.rejects(mailer.send(message()), isUnavailableWithoutSecret)
    const line = logs.lines().find((l) => l.msg === 'mail delivery failed')
    assert.ok(line, logs.text())
    assert.equal(line.reason, 'SMTP_URL is not set')
    const row = await outboxRow(plinth, line.mailId as string)
    assert.equal(row.status, 'failed')
    assert.equal(row.last_error, 'SMTP_URL is not set')
    assert.ok(!logs.text().includes('tok-7Hq2'), 'no body in the log')
    assert.ok(!logs.text().includes('ada@example.test'), 'no recipient in the log')
  })

  const injections: [string, Partial<MailMessage>][] = [
    ['a recipient with CR LF and a Bcc header', { to: 'ada@example.test\r\nBcc: eve@evil.test' }],
    ['a recipient with a bare LF', { to: 'ada@example.test\nBcc: eve@evil.test' }],
    ['a list of recipients', { to: 'ada@example.test, eve@evil.test' }],
    ['a display name with an address inside', { to: 'Ada <eve@evil.test>' }],
    ['a subject with CR LF and a Bcc header', { subject: 'Hello\r\nBcc: eve@evil.test' }],
    ['a subject with a bare CR', { subject: 'Hello\rBcc: eve@evil.test' }],
    ['an empty subject', { subject: '  ' }],
    ['a category with a line break', { category: 'reset\nx' }],
  ]
  for (const [name, over] of injections) {
    it(`refuses ${name} with PLINTH_MAIL_INVALID, sending and recording nothing`, async () => {
      const smtp = await startSmtp(credentials)
      const { mailer } = mailerWith({ SMTP_URL: smtp.url })
      try {
        const rowsBefore = (await outboxRows(plinth)).length
        await assert.rejects(mailer.send(message(over)), (err: unknown) => {
          assert.ok(isPlinthError(err))
          assert.equal(err.code, 'PLINTH_MAIL_INVALID')
          assert.equal(err.status, 400)
          return true
        })
        assert.equal((await outboxRows(plinth)).length, rowsBefore)
        assert.equal(smtp.received.length, 0)
      } finally {
        await mailer.close()
        await smtp.close()
      }
    })
  }
})
