import type { Firing } from './conditions.ts'
import { type LoginSource, type MinuteAgg, mergeSources } from './minutes.ts'

/** Thresholds of the credential-stuffing pattern (decision 0024). */
export const STUFFING = {
  /** Minutes looked at. */
  window: 10,
  /** Failed sign-ins in the window, at least. */
  minFailures: 30,
  /** Distinct accounts tried, at least. */
  minAccounts: 20,
  /** Few sources: the busiest `maxSources` make at least `concentration` of the failures. */
  maxSources: 3,
  concentration: 0.8,
} as const

/**
 * Credential stuffing: many failed sign-ins, over many accounts, from few sources (a leaked list
 * tried from a handful of machines). A brute force on one account is the lockout's job and a
 * broken client retrying one password is one account; neither matches.
 */
export function detectCredentialStuffing(minutes: readonly MinuteAgg[]): Firing | null {
  const sources: Record<string, LoginSource> = {}
  let failures = 0
  for (const m of minutes.slice(-STUFFING.window)) {
    failures += m.login.failures
    mergeSources(sources, m.login.sources)
  }
  if (failures < STUFFING.minFailures) return null
  const accounts = new Set(Object.values(sources).flatMap((s) => s.accounts))
  if (accounts.size < STUFFING.minAccounts) return null
  const busiest = Object.entries(sources)
    .sort((a, b) => b[1].n - a[1].n)
    .slice(0, STUFFING.maxSources)
  const fromBusiest = busiest.reduce((s, [, src]) => s + src.n, 0)
  if (fromBusiest / failures < STUFFING.concentration) return null
  const list = busiest.map(([ip, s]) => `${ip} (${s.n} failures, ${s.accounts.length} accounts)`).join(', ')
  return {
    rule: 'credential-stuffing',
    alert: 'PlinthLoginFailureSpike',
    kind: 'security',
    severity: 'page',
    summary: 'Credential stuffing: many accounts failing to sign in from few sources',
    description: `${failures} failed sign-ins over ${accounts.size} accounts in ${STUFFING.window} minutes, ${Math.round((fromBusiest / failures) * 100)} % of them from ${busiest.length} source(s): ${list}. Block the sources at the proxy or firewall.`,
    labels: {},
    value: failures,
  }
}
