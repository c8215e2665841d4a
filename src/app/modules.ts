import type { PlinthModule } from '../core/module.ts'
import { accountsModule } from '../modules/accounts/accounts.module.ts'
import { alertsModule } from '../modules/alerts/alerts.module.ts'
import { auditModule } from '../modules/audit/audit.module.ts'
import { backupsModule } from '../modules/backups/backups.module.ts'
import { errorsModule } from '../modules/errors/errors.module.ts'
import { filesModule } from '../modules/files/files.module.ts'
import { importsModule } from '../modules/imports/imports.module.ts'
import { jobsModule } from '../modules/jobs/jobs.module.ts'
import { keysModule } from '../modules/keys/keys.module.ts'
import { mailModule } from '../modules/mail/mail.module.ts'
import { privacyModule } from '../modules/privacy/privacy.module.ts'
import { systemModule } from '../modules/system/system.module.ts'
import { webhooksModule } from '../modules/webhooks/webhooks.module.ts'

/** Every built-in module, in the order their plugins and routes are registered. */
export const builtinModules: readonly PlinthModule[] = [
  systemModule,
  keysModule,
  auditModule,
  mailModule,
  jobsModule,
  webhooksModule,
  accountsModule,
  privacyModule,
  backupsModule,
  importsModule,
  alertsModule,
  errorsModule,
  filesModule,
]
