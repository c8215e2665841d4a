import { randomUUID, X509Certificate } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { getHeapStatistics } from 'node:v8'
import { Counter, Gauge } from 'prom-client'
import type { ModuleContext } from '../../core/module.ts'
import { type LoginSource, MAX_ACCOUNTS_PER_SOURCE, MAX_SOURCES } from './minutes.ts'

/** Failed sign-ins seen by this process since the last `take()`, by source address. */
export interface LoginFailureLog {
  take(): { failures: number; sources: Record<string, LoginSource> }
  stop(): void
}

const CERT_CACHE_MS = 3_600_000

/**
 * The metrics the alert rules need that nothing else exports: failed sign-ins (from the security
 * events), V8's heap limit (to put the heap in proportion) and the expiry of the certificate Plinth
 * serves directly. Registered on every process, like every built-in module's metrics.
 */
export function registerAlertMetrics(ctx: ModuleContext): {
  logins: LoginFailureLog
  tlsExpiry: () => number | null
} {
  const registers = [ctx.metrics.registry]
  const failures = new Counter({
    name: 'plinth_login_failures_total',
    help: 'Failed sign-in attempts seen by this process (wrong password, unknown address, locked account, wrong second factor).',
    registers,
  })
  ctx.metrics.gauge(
    'plinth_process_heap_limit_bytes',
    "V8's heap size limit of this process (what nodejs_heap_size_used_bytes may reach).",
    () => getHeapStatistics().heap_size_limit,
  )

  let cert: { at: number; expiry: number | null } | undefined
  const tlsExpiry = (): number | null => {
    const file = ctx.config.tlsCertFile
    if (!file) return null
    if (!cert || Date.now() - cert.at > CERT_CACHE_MS) {
      let expiry: number | null = null
      try {
        expiry = Math.floor(Date.parse(new X509Certificate(readFileSync(file)).validTo) / 1000)
      } catch (err) {
        ctx.logger.warn({ err, file }, 'could not read the TLS certificate for its expiry')
      }
      cert = { at: Date.now(), expiry }
    }
    return cert.expiry
  }
  new Gauge({
    name: 'plinth_tls_certificate_expiry_timestamp_seconds',
    help: 'When the certificate in PLINTH_TLS_CERT_FILE expires (Unix seconds); absent when Plinth does not serve TLS itself.',
    labelNames: ['certificate'] as const,
    registers,
    collect() {
      const expiry = tlsExpiry()
      if (expiry !== null) this.set({ certificate: 'server' }, expiry)
    },
  })

  let pending = { failures: 0, sources: {} as Record<string, LoginSource> }
  const off = ctx.securityEvents.on((event) => {
    if (event.type !== 'login:failed' && event.type !== 'mfa:failed') return
    failures.inc()
    pending.failures++
    const ip = event.ip ?? 'unknown'
    let source = pending.sources[ip]
    if (!source) {
      if (Object.keys(pending.sources).length >= MAX_SOURCES) return
      source = pending.sources[ip] = { n: 0, accounts: [] }
    }
    source.n++
    // An unknown address has no account id: each such attempt counts as another account tried.
    const account = event.actor.id ?? event.target?.id ?? `?${event.requestId ?? randomUUID()}`
    if (source.accounts.length < MAX_ACCOUNTS_PER_SOURCE && !source.accounts.includes(account))
      source.accounts.push(account)
  })
  return {
    logins: {
      take() {
        const taken = pending
        pending = { failures: 0, sources: {} }
        return taken
      },
      stop: off,
    },
    tlsExpiry,
  }
}
