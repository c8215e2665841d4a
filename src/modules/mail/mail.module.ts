import type { PlinthModule } from '../../core/module.ts'
import { mailPersonalData } from './mail.privacy.ts'
import { mailRetention } from './mail.retention.ts'
import { createMailer } from './mailer.ts'
import createMailOutbox from './migrations/0002-create-mail-outbox.ts'

/**
 * Outgoing e-mail: owns the `mail_outbox` table and provides the mailer (`createMailer` in
 * mailer.ts), which reaches every module as `ctx.mailer`; no routes yet.
 */
export const mailModule: PlinthModule = {
  name: 'mail',
  migrations: { '0002-create-mail-outbox': createMailOutbox },
  personalData: mailPersonalData,
  retention: (ctx) => mailRetention(ctx.config),
  provides: {
    mailer(ctx) {
      const mailer = createMailer({ config: ctx.config, logger: ctx.logger, db: ctx.db })
      return { value: mailer, close: () => mailer.close() }
    },
  },
}
