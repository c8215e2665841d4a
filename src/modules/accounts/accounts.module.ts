import type { PlinthModule } from '../../core/module.ts'
import './accounts.tables.ts'
import { registerAccountsMetrics } from './accounts.metrics.ts'
import { accountsPersonalData } from './accounts.privacy.ts'
import { accountsRetention } from './accounts.retention.ts'
import { accountsServices } from './accounts.wiring.ts'
import { adminRoutes } from './admin.routes.ts'
import { authRoutes } from './auth.routes.ts'
import authenticate from './authenticate.plugin.ts'
import { bootstrapAdmin } from './bootstrap-admin.ts'
import { totpSecretColumn } from './encrypted-columns.ts'
import { importUser } from './imported-users.ts'
import { meRoutes } from './me.routes.ts'
import createAccounts from './migrations/0003-create-accounts.ts'
import checksInFlight from './migrations/0041-credential-checks-in-flight.ts'
import { createPrincipalActive } from './principal-active.ts'

/** Users, sessions, second factors, API tokens, roles: who is calling and what they may do. */
export const accountsModule: PlinthModule = {
  name: 'accounts',
  migrations: { '0003-create-accounts': createAccounts, '0041-credential-checks-in-flight': checksInFlight },
  encryptedColumns: [totpSecretColumn],
  personalData: accountsPersonalData,
  retention: (ctx) => accountsRetention(ctx.config),
  metrics: registerAccountsMetrics,
  async plugins(app, ctx) {
    const { sessions, tokens, accounts } = accountsServices(ctx)
    await app.register(authenticate, { sessions, tokens, secretKey: ctx.config.secretKey })
    // Work started after an answer (password-reset requests) ends before the database closes.
    app.addHook('onClose', () => accounts.drain())
  },
  routes(api, ctx) {
    authRoutes(api, ctx)
    meRoutes(api, ctx)
    adminRoutes(api, ctx)
  },
  start: bootstrapAdmin,
  provides: {
    users(ctx) {
      const { admin, mfa } = accountsServices(ctx)
      return {
        get: admin.get,
        list: admin.list,
        reauthenticate: mfa.reauthenticate,
        importUser,
        principalActive: createPrincipalActive({ db: ctx.db.kysely, now: ctx.now }),
      }
    },
  },
}
