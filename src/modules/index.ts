import type { PlinthModule } from '../core/module.ts'
import { accountsModule } from './accounts/accounts.module.ts'
import { mailModule } from './mail/mail.module.ts'
import { systemModule } from './system/system.module.ts'

/** Every built-in module, in the order their plugins and routes are registered. */
export const builtinModules: readonly PlinthModule[] = [systemModule, mailModule, accountsModule]
