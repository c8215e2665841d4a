import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { InMemorySpanExporter } from '@opentelemetry/sdk-trace'
import type { PlinthConfig } from '../src/config/config.schema.ts'
import { newSecret, TOKEN_PREFIX } from '../src/modules/accounts/secrets.ts'
import { maskSecrets } from '../src/modules/mail/mail.privacy.ts'
import { createMailer, type MailMessage } from '../src/modules/mail/mailer.ts'
import { isPlinthError } from '../src/shared/errors.ts'
import { captureLogs } from './helpers/log-capture.ts'
import { closedPort, startSmtp } from './helpers/smtp-server.ts'
import { testConfig } from './helpers/test-config.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'

const USER = 'mailbot'
const PASSWORD = 'Pw-9xq-smtp-secret'

/** No category: a message a module sends without naming what kind it is. */
const message = (over: Partial<MailMessage> = {}): MailMessage => ({
  to: 'grace@example.test',
  subject: 'Your export is ready',
  text: 'Download it at https://plinth.test/exports/e-81',
  ...over,
})

describe('mail without a category, and bodies of the wrong type', () => {
  const exporter = new InMemorySpanExporter()
  let plinth: TestPlinth
  before(async () => {
    plinth = await startTestPlinth({ traceExporter: exporter })
  })
  after(() => plinth?.close())

  const mailerWith = (env: Record<string, string>, override: Partial<PlinthConfig> = {}) => {
    const config = { ...testConfig(env), ...override }
    const logs = captureLogs(config)
    return { mailer: createMailer({ config, logger: logs.logger, db: plinth.db }), logs }
  }
  const outboxRow = (id: string) =>
    plinth.db.kysely.selectFrom('mail_outbox').selectAll().where('id', '=', id).executeTakeFirstOrThrow()

  it('delivers it, stores no category, and its span says category "none"', async () => {
    const smtp = await startSmtp({ user: USER, password: PASSWORD })
    const { mailer, logs } = mailerWith({ SMTP_URL: smtp.url })
    try {
      exporter.reset()
      const receipt = await mailer.send(message())
      assert.equal(receipt.delivered, 'smtp')
      const row = await outboxRow(receipt.id)
      assert.equal(row.status, 'sent')
      assert.equal(row.category, null)
      assert.equal(row.html_body, null)
      assert.equal(smtp.received.length, 1)
      const sent = logs.lines().find((l) => l.msg === 'mail sent')
      assert.equal(sent?.category, null)
      const span = exporter.getFinishedSpans().find((s) => s.name === 'mail send')
      assert.equal(span?.attributes['plinth.mail.category'], 'none')
      assert.equal(span?.attributes['plinth.mail.delivered'], 'smtp')
    } finally {
      await mailer.close()
      await smtp.close()
    }
  })

  it('in production without SMTP_URL, fails it with no category in the row or the log', async () => {
    const { mailer, logs } = mailerWith({}, { env: 'production' })
    await assert.rejects(mailer.send(message()), (err: unknown) => {
      assert.ok(isPlinthError(err))
      assert.equal(err.code, 'PLINTH_MAIL_UNAVAILABLE')
      return true
    })
    const line = logs.lines().find((l) => l.msg === 'mail delivery failed')
    assert.ok(line)
    assert.equal(line.category, null)
    const row = await outboxRow(line.mailId as string)
    assert.equal(row.status, 'failed')
    assert.equal(row.category, null)
  })

  it('refuses an HTML body or a text body that is not a string, or secrets that are not non-empty strings, recording nothing', async () => {
    const { mailer } = mailerWith({})
    const count = async () => (await plinth.db.kysely.selectFrom('mail_outbox').select('id').execute()).length
    const before = await count()
    for (const over of [
      { html: 42 },
      { text: undefined },
      { to: 7 },
      { subject: 'x'.repeat(501) },
      { secrets: 'tok' },
      { secrets: [''] },
      { secrets: ['tok', 3] },
    ]) {
      await assert.rejects(mailer.send(message(over as unknown as Partial<MailMessage>)), (err: unknown) => {
        assert.ok(isPlinthError(err))
        assert.equal(err.code, 'PLINTH_MAIL_INVALID')
        return true
      })
    }
    assert.equal(await count(), before)
  })

  it('keeps a password that is not valid percent-encoding out of the stored reason and the log', async () => {
    // `%zz` is not an escape: decoding it fails, and the raw form is what must be scrubbed.
    const rawPassword = 'Pw%zz-smtp-secret'
    const url = `smtp://${USER}:${rawPassword}@127.0.0.1:${await closedPort()}`
    const { mailer, logs } = mailerWith({ SMTP_URL: url, PLINTH_SMTP_TIMEOUT: '400ms' })
    try {
      await assert.rejects(mailer.send(message({ category: 'export' })), (err: unknown) => {
        assert.ok(isPlinthError(err))
        assert.equal(err.code, 'PLINTH_MAIL_UNAVAILABLE')
        return true
      })
      const failed = logs.lines().find((l) => l.msg === 'mail delivery failed')
      assert.ok(failed)
      const row = await outboxRow(failed.mailId as string)
      assert.match(row.last_error ?? '', /ECONNREFUSED.*gave up after \d+ attempts/)
      assert.ok(!logs.text().includes('zz-smtp-secret'))
      assert.ok(!(row.last_error ?? '').includes('zz-smtp-secret'))
    } finally {
      await mailer.close()
    }
  })

  // The link's secret is stored only as a hash; the outbox copy must not hold a link that works.
  describe('the secrets of single-use links', () => {
    const secret = 'reset+K7/secret=' // changes when URL-encoded
    const plinthShaped = `pli_${'Ab9_-'.repeat(8)}xyz` // a Plinth secret nobody declared
    const withSecrets = message({
      text: `Reset at https://plinth.test/r?token=${encodeURIComponent(secret)} or paste ${secret}; token ${plinthShaped}`,
      html: `<a href="https://plinth.test/r?token=${encodeURIComponent(secret)}">${secret}</a>`,
      secrets: [secret],
    })

    it('are sent whole but masked in the outbox copy, as written and URL-encoded', async () => {
      const smtp = await startSmtp({ user: USER, password: PASSWORD })
      const { mailer } = mailerWith({ SMTP_URL: smtp.url })
      try {
        const receipt = await mailer.send(withSecrets)
        assert.equal(receipt.delivered, 'smtp')
        const sent = smtp.received.at(-1)!.body
        assert.ok(sent.includes(plinthShaped), 'the mail itself keeps the link')
        const row = await outboxRow(receipt.id)
        assert.equal(row.status, 'sent')
        for (const body of [row.text_body, row.html_body ?? '']) {
          assert.ok(!body.includes(secret) && !body.includes(encodeURIComponent(secret)), body)
          assert.ok(!body.includes(plinthShaped), body)
          assert.match(body, /\[link secret removed\]/)
        }
        assert.equal(
          row.text_body,
          'Reset at https://plinth.test/r?token=[link secret removed] or paste [link secret removed]; token [link secret removed]',
        )
      } finally {
        await mailer.close()
        await smtp.close()
      }
    })

    it('are masked in production without SMTP_URL too, and kept whole only in a message captured for a developer', async () => {
      const production = mailerWith({}, { env: 'production' })
      await assert.rejects(production.mailer.send(withSecrets))
      const failed = production.logs.lines().find((l) => l.msg === 'mail delivery failed')
      const stored = await outboxRow(failed?.mailId as string)
      assert.equal(stored.status, 'failed')
      assert.ok(!stored.text_body.includes(secret) && !stored.text_body.includes(plinthShaped))

      const local = mailerWith({})
      const captured = await local.mailer.send(withSecrets)
      assert.equal(captured.delivered, 'outbox')
      const row = await outboxRow(captured.id)
      assert.equal(row.status, 'logged')
      assert.equal(row.text_body, withSecrets.text)
      assert.equal(row.html_body, withSecrets.html)
    })
  })
})

describe('the shape of Plinth secrets, as mail masks it', () => {
  it('masks every kind of secret Plinth makes wherever it stands, whatever character it ends with', () => {
    const made = Object.values(TOKEN_PREFIX).flatMap((prefix) => [
      ...Array.from({ length: 50 }, () => newSecret(prefix).secret),
      // The last character is where a word-boundary pattern failed: `-` and `_` are both base64url.
      `${prefix}${'a'.repeat(42)}-`,
      `${prefix}${'-'.repeat(43)}`,
      `${prefix}${'b'.repeat(42)}_`,
    ])
    for (const secret of made)
      for (const text of [
        secret,
        `token=${secret}&x=1`,
        `"${secret}"`,
        `open ${secret}\nthen`,
        `(${secret}).`,
      ]) {
        const masked = maskSecrets(text) as string
        assert.ok(!masked.includes(secret), `${JSON.stringify(text)} was kept as ${JSON.stringify(masked)}`)
        assert.match(masked, /\[link secret removed\]/)
      }
    // Not a secret of Plinth's: a longer run of the same characters, or another prefix.
    for (const text of [`plr_${'a'.repeat(44)}`, `xplr_${'a'.repeat(43)}`, `plx_${'a'.repeat(43)}`])
      assert.equal(maskSecrets(text), text)
  })
})
