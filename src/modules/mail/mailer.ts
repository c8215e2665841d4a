import type { SendMailOptions } from 'nodemailer'
import type { Logger } from 'pino'
import type { PlinthConfig } from '../../config/config.schema.ts'
import type { Mailer, MailMessage, MailReceipt } from '../../core/mail.ts'
import type { Database } from '../../infra/db/create-db.ts'
import { RetryDeadlineError, retryWithBackoff } from '../../infra/db/retry.ts'
import { SpanKind, withSpan } from '../../observability/tracing.ts'
import { PlinthError } from '../../shared/errors.ts'
import { MASKED_SECRET, maskSecrets } from './mail.privacy.ts'
import type { MailStatus } from './mail.tables.ts'

export type { Mailer, MailMessage, MailReceipt } from '../../core/mail.ts'

type MailConfig = Pick<PlinthConfig, 'env' | 'smtpUrl' | 'mailFrom' | 'smtpTimeout'>

// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is refused
const CONTROL = /[\u0000-\u001f\u007f]/
const ADDRESS = /^[^\s<>@,;:"()[\]\\]+@[^\s<>@,;:"()[\]\\]+$/
const CATEGORY = /^[a-z][a-z0-9_.:-]{0,63}$/

function invalid(detail: string): PlinthError {
  return new PlinthError('PLINTH_MAIL_INVALID', detail)
}

function assertMessage(m: MailMessage): void {
  // RFC 5321 caps a path at 256 octets; `\s` in ADDRESS already refuses CR and LF.
  if (typeof m.to !== 'string' || m.to.length > 254 || !ADDRESS.test(m.to))
    throw invalid('The recipient must be one e-mail address (user@example.com), on one line.')
  if (
    typeof m.subject !== 'string' ||
    m.subject.trim() === '' ||
    m.subject.length > 500 ||
    CONTROL.test(m.subject)
  )
    throw invalid('The subject must be one line of at most 500 characters, without control characters.')
  if (typeof m.text !== 'string' || (m.html !== undefined && typeof m.html !== 'string'))
    throw invalid('The text body (and the HTML body, when given) must be strings.')
  if (m.category !== undefined && !CATEGORY.test(m.category))
    throw invalid('The category must be lower-case letters, digits and . _ : - (at most 64).')
  if (
    m.secrets !== undefined &&
    (!Array.isArray(m.secrets) || !m.secrets.every((s) => typeof s === 'string' && s !== ''))
  )
    throw invalid('The secrets, when given, must be a list of non-empty strings.')
}

/**
 * A body as `mail_outbox` keeps it: the message's declared secrets (as written and URL-encoded) and
 * anything shaped like Plinth's single-use secrets masked. A database reader, or a backup, must not
 * find there a link that still works: the tokens themselves are stored only as hashes.
 */
function storedBody(body: string, secrets: readonly string[] | undefined): string {
  let kept = body
  for (const secret of secrets ?? [])
    kept = kept.replaceAll(secret, MASKED_SECRET).replaceAll(encodeURIComponent(secret), MASKED_SECRET)
  return maskSecrets(kept) as string
}

// Codes nodemailer gives to failures that a retry a second later cannot fix. A reply code decides
// first: 5xx is permanent (bad credentials, refused recipient), 4xx is worth retrying.
const PERMANENT_CODES = new Set([
  'EAUTH',
  'ENOAUTH',
  'ECONFIG',
  'EENVELOPE',
  'EMAXRECIPIENTS',
  'ETLS',
  'EREQUIRETLS',
])

function isPermanent(err: unknown): boolean {
  const { code, responseCode } = (err ?? {}) as { code?: unknown; responseCode?: unknown }
  if (typeof responseCode === 'number') return responseCode >= 500
  return typeof code === 'string' && PERMANENT_CODES.has(code)
}

/** Every form the SMTP credentials could take in an error text: raw, URL-decoded, base64 (AUTH PLAIN/LOGIN). */
function credentialForms(smtpUrl: string | undefined): string[] {
  if (!smtpUrl) return []
  const decode = (s: string) => {
    try {
      return decodeURIComponent(s)
    } catch {
      return s
    }
  }
  const u = new URL(smtpUrl)
  const user = decode(u.username)
  const pass = decode(u.password)
  const b64 = (s: string) => Buffer.from(s).toString('base64')
  const forms = new Set<string>()
  if (pass) for (const f of [u.password, pass, b64(pass), b64(`\0${user}\0${pass}`)]) forms.add(f)
  // A very short user name would blank out ordinary words; the password alone is always removed.
  if (user.length >= 3) for (const f of [u.username, user, b64(user)]) forms.add(f)
  return [...forms].sort((a, b) => b.length - a.length)
}

class MailDeliveryError extends Error {
  override name = 'MailDeliveryError'
}

/**
 * The mailer modules use to send e-mail. Every message is first recorded in `mail_outbox` with its
 * body (the trail of what went out; retention prunes the table), the secrets of its single-use links
 * masked (`MailMessage.secrets`, and anything shaped like Plinth's own) unless it is captured for a
 * developer, then:
 *
 * - with `SMTP_URL`: sent through a pooled nodemailer transport from `PLINTH_MAIL_FROM`. Transient
 *   failures (connection refused or cut, timeouts, 4xx replies) are retried with backoff until
 *   `PLINTH_SMTP_TIMEOUT` has passed, which also bounds each attempt, so `send` settles within about
 *   that time. Permanent failures (5xx replies such as refused credentials, TLS errors) are not
 *   retried. Success marks the row `sent`; failure marks it `failed` with the reason and rejects
 *   with `PLINTH_MAIL_UNAVAILABLE`. In staging and production an `smtp:` URL with credentials
 *   requires STARTTLS (opt out with `?requireTLS=false`), so a password never crosses in clear.
 * - without `SMTP_URL`, in development and test: the row is `logged` and the message, body
 *   included, is written to the log at info (`mail captured (no SMTP_URL)`): how a developer gets
 *   their reset link.
 * - without `SMTP_URL`, in staging and production: allowed (an instance with closed sign-up may
 *   need no mail), but `send` marks the row `failed` and rejects with `PLINTH_MAIL_UNAVAILABLE`.
 *
 * Outside development and test a body never reaches the log, and no error text stored or logged
 * carries the SMTP credentials (they are scrubbed from the reason).
 *
 * @example
 * const mailer = createMailer({ config, logger, db })
 * await mailer.send({ to: 'ada@example.com', subject: 'Reset your password', text, category: 'password-reset' })
 */
export function createMailer(deps: { config: MailConfig; logger: Logger; db: Database }): Mailer {
  const { config, db } = deps
  const log = deps.logger.child({ component: 'mail' })
  const local = config.env === 'development' || config.env === 'test'
  const secrets = credentialForms(config.smtpUrl)
  const timeout = config.smtpTimeout

  const scrub = (text: string) => secrets.reduce((t, s) => t.replaceAll(s, '****'), text)
  const reasonOf = (err: unknown): string => {
    const e = err as {
      code?: unknown
      responseCode?: unknown
      message?: unknown
    }
    const tags = [e?.code, e?.responseCode].filter((t) => typeof t === 'string' || typeof t === 'number')
    const message = typeof e?.message === 'string' ? e.message : String(e)
    return scrub(`${tags.length > 0 ? `${tags.join(' ')}: ` : ''}${message}`).slice(0, 1000)
  }

  // nodemailer is loaded with the first message rather than at start (decision 0034).
  const makeTransport = config.smtpUrl
    ? async () => {
        const { createTransport } = await import('nodemailer')
        const u = new URL(config.smtpUrl!)
        const requireTLS = !local && u.protocol === 'smtp:' && (u.username !== '' || u.password !== '')
        // Options in the URL's query string win over these (nodemailer merges them so).
        return createTransport(
          {
            url: config.smtpUrl,
            pool: true,
            maxConnections: 3,
            connectionTimeout: timeout,
            greetingTimeout: timeout,
            socketTimeout: timeout,
            dnsTimeout: timeout,
            requireTLS,
            disableFileAccess: true,
            disableUrlAccess: true,
            logger: false,
          },
          { from: config.mailFrom },
        )
      }
    : undefined
  let transporter: ReturnType<NonNullable<typeof makeTransport>> | undefined
  const transport = makeTransport && {
    async sendMail(mail: SendMailOptions) {
      transporter ??= makeTransport()
      return (await transporter).sendMail(mail)
    },
    close: () => void transporter?.then((t) => t.close()),
  }

  /** Records the message; its bodies whole only when it is captured for a developer (`logged`). */
  const record = async (m: MailMessage, status: MailStatus, lastError: string | null = null) => {
    const whole = status === 'logged'
    const row = await db.kysely
      .insertInto('mail_outbox')
      .values({
        to_address: m.to,
        subject: m.subject,
        text_body: whole ? m.text : storedBody(m.text, m.secrets),
        html_body: m.html === undefined ? null : whole ? m.html : storedBody(m.html, m.secrets),
        category: m.category ?? null,
        status,
        last_error: lastError,
      })
      .returning('id')
      .executeTakeFirstOrThrow()
    return row.id
  }

  const unavailable = (reason: string) =>
    new PlinthError('PLINTH_MAIL_UNAVAILABLE', undefined, {
      cause: new MailDeliveryError(reason),
      headers: { 'retry-after': '60' },
    })

  async function deliver(m: MailMessage, mailId: string): Promise<MailReceipt> {
    if (!transport) throw new Error('unreachable: deliver without a transport')
    const category = m.category ?? null
    const started = performance.now()
    let attempts = 0
    let failure: unknown
    // The attempt cut by the deadline fails with EABORT, which says nothing; the failure before it does.
    let lastCause: unknown
    try {
      const outcome = await retryWithBackoff(
        async () => {
          attempts++
          const remaining = Math.max(1, Math.ceil(timeout - (performance.now() - started)))
          try {
            const info = await transport.sendMail({
              to: m.to,
              subject: m.subject,
              text: m.text,
              ...(m.html === undefined ? {} : { html: m.html }),
              signal: AbortSignal.timeout(remaining),
            })
            return { ok: true as const, messageId: info.messageId }
          } catch (err) {
            if (isPermanent(err)) return { ok: false as const, err }
            if ((err as { code?: unknown }).code !== 'EABORT') lastCause = err
            throw err
          }
        },
        {
          deadlineMs: timeout,
          initialDelayMs: 250,
          maxDelayMs: 2000,
          onRetry: ({ attempt, delayMs, error }) =>
            log.warn({ mailId, category, attempt, delayMs, reason: reasonOf(error) }, 'mail delivery retry'),
        },
      )
      if (outcome.ok) {
        await db.kysely
          .updateTable('mail_outbox')
          .set({ status: 'sent', attempts, sent_at: new Date(), last_error: null })
          .where('id', '=', mailId)
          .execute()
        log.info({ mailId, category, attempts, messageId: outcome.messageId }, 'mail sent')
        return { id: mailId, delivered: 'smtp' }
      }
      failure = outcome.err
    } catch (err) {
      failure = err
    }
    const reason =
      failure instanceof RetryDeadlineError
        ? `${lastCause === undefined ? 'no answer' : reasonOf(lastCause)} (gave up after ${attempts} attempts in ${timeout} ms, PLINTH_SMTP_TIMEOUT)`
        : reasonOf(failure)
    await db.kysely
      .updateTable('mail_outbox')
      .set({ status: 'failed', attempts, last_error: reason })
      .where('id', '=', mailId)
      .execute()
    log.error({ mailId, category, attempts, reason }, 'mail delivery failed')
    throw unavailable(reason)
  }

  return Object.freeze({
    canDeliver: transport !== undefined || local,
    /** One CLIENT span per message (`mail send`) in the caller's trace: its category and outcome, never its recipient. */
    send(message: MailMessage): Promise<MailReceipt> {
      return withSpan(
        'mail send',
        { kind: SpanKind.CLIENT, attributes: { 'plinth.mail.category': message.category ?? 'none' } },
        async (span) => {
          const receipt = await sendMessage(message)
          span.setAttribute('plinth.mail.delivered', receipt.delivered)
          return receipt
        },
      )
    },
    async close() {
      transport?.close()
    },
  })

  async function sendMessage(message: MailMessage): Promise<MailReceipt> {
    assertMessage(message)
    if (transport) return deliver(message, await record(message, 'pending'))
    if (local) {
      const mailId = await record(message, 'logged')
      const { to, subject, text, category } = message
      log.info({ mailId, category, to, subject, text }, 'mail captured (no SMTP_URL)')
      return { id: mailId, delivered: 'outbox' as const }
    }
    const reason = 'SMTP_URL is not set'
    const mailId = await record(message, 'failed', reason)
    // No recipient and no body here: outside development and test they stay in the table only.
    log.error({ mailId, category: message.category ?? null, reason }, 'mail delivery failed')
    throw unavailable(reason)
  }
}
