import { Counter, Gauge } from 'prom-client'
import type { ModuleContext } from '../../core/module.ts'
import './accounts.tables.ts'

/** Seconds a count of active sessions is reused between scrapes (one query per replica and period). */
const SESSIONS_CACHE_MS = 15_000

/**
 * The accounts module's business metrics: accounts created (from the security events, so every
 * path that creates one counts, after its transaction committed) and sessions active now (counted
 * in the database at scrape time, at most every 15 s; the last figure is kept while it is away).
 */
export function registerAccountsMetrics(ctx: ModuleContext): void {
  const registers = [ctx.metrics.registry]
  const registered = new Counter({
    name: 'plinth_users_registered_total',
    help: 'Accounts created through this process, by how: sign-up (open or by invitation) or administrator.',
    labelNames: ['via'] as const,
    registers,
  })
  for (const via of ['sign-up', 'administrator']) registered.inc({ via }, 0)
  ctx.securityEvents.on((event) => {
    if (event.outcome !== 'success') return
    if (event.type === 'user:signed-up') registered.inc({ via: 'sign-up' })
    else if (event.type === 'user:created') registered.inc({ via: 'administrator' })
  })

  const db = ctx.db.kysely
  let last = 0
  let cached: { at: number; value: Promise<number> } | undefined
  const activeSessions = () => {
    const now = ctx.now()
    if (!cached || now - cached.at > SESSIONS_CACHE_MS || now < cached.at) {
      const value = db
        .selectFrom('sessions')
        .select((eb) => eb.fn.countAll<string>().as('n'))
        .where('revoked_at', 'is', null)
        .where('expires_at', '>', new Date(now))
        .where('last_seen_at', '>', new Date(now - ctx.config.sessionIdleTimeout))
        .executeTakeFirstOrThrow()
        .then((r) => {
          last = Number(r.n)
          return last
        })
        .catch(() => {
          cached = undefined
          return last
        })
      cached = { at: now, value }
    }
    return cached.value
  }
  new Gauge({
    name: 'plinth_sessions_active',
    help: 'Sessions signed in now (not revoked, not expired, used within PLINTH_SESSION_IDLE_TIMEOUT), across all replicas; counted at most every 15 s.',
    registers,
    async collect() {
      this.set(await activeSessions())
    },
  })
}
