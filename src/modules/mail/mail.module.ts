import type { PlinthModule } from '../../core/module.ts'
import { mailPersonalData } from './mail.privacy.ts'
import { mailRetention } from './mail.retention.ts'
import createMailOutbox from './migrations/0002-create-mail-outbox.ts'

/**
 * Outgoing e-mail: owns the `mail_outbox` table. The mailer itself (`createMailer` in mailer.ts)
 * is built by the composition root and reaches other modules as `ctx.mailer`; no routes yet.
 */
export const mailModule: PlinthModule = {
  name: 'mail',
  migrations: { '0002-create-mail-outbox': createMailOutbox },
  personalData: mailPersonalData,
  retention: (ctx) => mailRetention(ctx.config),
}
