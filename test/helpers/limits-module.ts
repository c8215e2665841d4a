import type { PlinthModule } from '../../src/core/module.ts'
import type { Principal } from '../../src/core/permissions.ts'

/**
 * Routes in each tier, and a stand-in for the accounts module: `x-test-user` becomes
 * `request.principal` in an onRequest hook, as the real authentication hook does.
 */
export const limitsModule: PlinthModule = {
  name: 'test-rate-limits',
  plugins(app) {
    app.addHook('onRequest', (request, _reply, done) => {
      const userId = request.headers['x-test-user']
      if (typeof userId === 'string') {
        request.principal = { kind: 'session', userId, role: 'member', via: 'bearer' } satisfies Principal
      }
      done()
    })
  },
  routes(api) {
    api.get('/limits/api', { config: { public: true } }, async () => ({ ok: true }))
    api.post('/limits/login', { config: { public: true, rateLimit: 'auth' } }, async () => ({ ok: true }))
    api.post('/limits/upload', { config: { public: true, rateLimit: 'upload' } }, async () => ({ ok: true }))
    api.get('/limits/free', { config: { public: true, rateLimit: false } }, async () => ({ ok: true }))
    api.get('/limits/private', { config: { permission: 'self:read' } }, async () => ({ ok: true }))
  },
}

/** Small limits, so that tests spend them quickly: api 3, auth 2, upload 1 per minute. */
export const LIMITS_ENV: Readonly<Record<string, string>> = {
  PLINTH_RATE_LIMIT_API: '3',
  PLINTH_RATE_LIMIT_AUTH: '2',
  PLINTH_RATE_LIMIT_UPLOAD: '1',
}

export const API = '/api/v1/limits/api'
