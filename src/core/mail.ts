/**
 * The mail contract the rest of Plinth depends on; the mail module (modules/mail) implements it
 * with SMTP and the `mail_outbox` table. It lives in core so that the module context can name it
 * without core depending on a module.
 */
/** One e-mail. `to` and `subject` are checked for header injection; the bodies are free text. */
export interface MailMessage {
  /** One bare address, `user@example.com` (no display name, no list). */
  readonly to: string
  /** One line, without control characters. */
  readonly subject: string
  readonly text: string
  readonly html?: string
  /** What the message is for (`password-reset`, `invite`…): stored and logged, unlike the body. */
  readonly category?: string
  /**
   * Values in the bodies that must not be kept: the secret of a single-use link, say. The copy in
   * `mail_outbox` shows each (as written, and URL-encoded) as `[link secret removed]`, as it does
   * anything shaped like Plinth's own single-use secrets; only a message captured for a developer
   * (no `SMTP_URL`, development and test) keeps them. Each must be a non-empty string.
   */
  readonly secrets?: readonly string[]
}

export interface MailReceipt {
  /** The `mail_outbox` row. */
  readonly id: string
  /** `smtp`: the SMTP server accepted it; `outbox`: captured in the log and table (no SMTP_URL). */
  readonly delivered: 'smtp' | 'outbox'
}

export interface Mailer {
  /**
   * False when no message can ever leave: no `SMTP_URL` in staging or production (development and
   * test capture messages in the log and `mail_outbox` instead, which counts as delivered). Callers
   * whose whole point is a message (invitations) refuse up front with `PLINTH_MAIL_UNAVAILABLE`.
   */
  readonly canDeliver: boolean
  /**
   * Records the message in `mail_outbox`, then delivers it (see `createMailer`). Rejects with
   * `PLINTH_MAIL_INVALID` before recording anything when `to`, `subject` or `category` is not
   * acceptable, and with `PLINTH_MAIL_UNAVAILABLE` when the message could not be delivered.
   */
  send(message: MailMessage): Promise<MailReceipt>
  /** Closes the SMTP connection pool (a message being sent finishes first). */
  close(): Promise<void>
}
