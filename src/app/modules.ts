import type { PlinthModule } from '../core/module.ts'
import { accountsModule } from './accounts/accounts.module.ts'
import { auditModule } from './audit/audit.module.ts'
import { jobsModule } from './jobs/jobs.module.ts'
import { keysModule } from './keys/keys.module.ts'
import { mailModule } from './mail/mail.module.ts'
import { privacyModule } from './privacy/privacy.module.ts'
import { systemModule } from './system/system.module.ts'
import { webhooksModule } from './webhooks/webhooks.module.ts'

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
]
