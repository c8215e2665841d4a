/**
 * The built-in alert conditions: the rules of deploy/prometheus/rules/plinth-alerts.yml, evaluated
 * on the minute aggregates of every process (minutes.ts) instead of Prometheus series. Pure: the
 * evaluator hands in the minutes and the live figures; tests hand in made-up ones.
 */

import type { IncidentKind, IncidentSeverity } from './alerts.tables.ts'
import { type MinuteAgg, quantile, SLOW_BUCKET } from './minutes.ts'

export interface Firing {
  readonly rule: string
  readonly kind: IncidentKind
  readonly severity: IncidentSeverity
  readonly summary: string
  readonly description: string
  readonly labels: Readonly<Record<string, string>>
  readonly value: number
  /** The Prometheus alert with the same condition, whose runbook applies. */
  readonly alert?: string
}

/** `rule` and its labels, in a stable order: what makes two firings the same incident. */
export function fingerprintOf(rule: string, labels: Readonly<Record<string, string>>): string {
  const parts = Object.keys(labels)
    .sort()
    .map((k) => `${k}=${labels[k]}`)
  return parts.length ? `${rule}{${parts.join(',')}}` : rule
}

export interface LiveFigures {
  /** Age of the oldest job that could run, by job type (plinth_job_queue_oldest_waiting_seconds). */
  readonly queueOldestSeconds: Readonly<Record<string, number>>
}

const MINUTE = 60_000
const AVAILABILITY_BUDGET = 0.001
const LATENCY_BUDGET = 0.01

/** A view of the minutes ending at `now`. */
export class Minutes {
  readonly all: readonly MinuteAgg[]
  readonly now: number
  constructor(all: readonly MinuteAgg[], now: number) {
    this.all = all
    this.now = now
  }

  last(minutes: number): MinuteAgg[] {
    const from = this.now - minutes * MINUTE
    return this.all.filter((m) => m.t >= from && m.t <= this.now)
  }

  /** How many minutes of observations there are (the evaluator's memory since it was elected). */
  get observed(): number {
    return this.all.length ? (this.now - this.all[0]!.t) / MINUTE : 0
  }

  ratio(minutes: number, pick: (m: MinuteAgg) => [bad: number, total: number]): number | null {
    let bad = 0
    let total = 0
    for (const m of this.last(minutes)) {
      const [b, t] = pick(m)
      bad += b
      total += t
    }
    return total > 0 ? bad / total : null
  }
}

const httpErrors = (m: MinuteAgg): [number, number] => {
  let e = 0
  let n = 0
  for (const r of Object.values(m.http)) {
    e += r.e5
    n += r.n
  }
  return [e, n]
}
const httpSlow = (m: MinuteAgg): [number, number] => {
  let slow = 0
  let n = 0
  for (const r of Object.values(m.http)) {
    const total = r.b.reduce((s, v) => s + v, 0)
    slow += total - r.b.slice(0, SLOW_BUCKET + 1).reduce((s, v) => s + v, 0)
    n += total
  }
  return [slow, n]
}

/** Requests a burn-rate window needs (long, short): one failure among a handful must not page. */
const MIN_REQUESTS = [100, 10] as const

function burn(
  v: Minutes,
  pick: (m: MinuteAgg) => [number, number],
  long: number,
  short: number,
  factor: number,
) {
  const total = (minutes: number) => v.last(minutes).reduce((s, m) => s + pick(m)[1], 0)
  if (total(long) < MIN_REQUESTS[0] || total(short) < MIN_REQUESTS[1]) return null
  const a = v.ratio(long, pick)
  const b = v.ratio(short, pick)
  return a !== null && b !== null && a > factor && b > factor ? a : null
}

/** Each instance's gauges over the last `minutes`, when every one of those minutes has them. */
function heldBy(v: Minutes, minutes: number, test: (g: MinuteAgg['instances'][string]) => boolean) {
  const window = v.last(minutes)
  if (window.length < minutes || v.observed < minutes) return []
  const instances = Object.keys(window.at(-1)?.instances ?? {})
  return instances.filter((id) =>
    window.every((m) => m.instances[id] !== undefined && test(m.instances[id]!)),
  )
}

/** Evaluates every built-in condition; returns what fires now. */
export function evaluateConditions(v: Minutes, live: LiveFigures): Firing[] {
  const out: Firing[] = []
  const fire = (f: Firing) => out.push(f)

  const availabilityFast =
    burn(v, httpErrors, 60, 5, 14.4 * AVAILABILITY_BUDGET) ??
    burn(v, httpErrors, 360, 30, 6 * AVAILABILITY_BUDGET)
  if (availabilityFast !== null)
    fire({
      rule: 'availability-fast-burn',
      alert: 'PlinthAvailabilitySLOFastBurn',
      kind: 'alert',
      severity: 'page',
      summary: 'Plinth is burning its availability error budget fast (5xx answers)',
      description: `${(availabilityFast * 100).toFixed(2)} % of requests answered 5xx over the last hour(s): the 30-day budget of the 99.9 % SLO goes within days.`,
      labels: { slo: 'availability' },
      value: availabilityFast,
    })
  else {
    const slow = burn(v, httpErrors, 1440, 120, 3 * AVAILABILITY_BUDGET)
    if (slow !== null)
      fire({
        rule: 'availability-slow-burn',
        alert: 'PlinthAvailabilitySLOSlowBurn',
        kind: 'alert',
        severity: 'ticket',
        summary: 'Plinth is slowly burning its availability error budget (5xx answers)',
        description: `${(slow * 100).toFixed(2)} % of requests answered 5xx over the last day.`,
        labels: { slo: 'availability' },
        value: slow,
      })
  }
  const latencyFast =
    burn(v, httpSlow, 60, 5, 14.4 * LATENCY_BUDGET) ?? burn(v, httpSlow, 360, 30, 6 * LATENCY_BUDGET)
  if (latencyFast !== null)
    fire({
      rule: 'latency-fast-burn',
      alert: 'PlinthLatencySLOFastBurn',
      kind: 'alert',
      severity: 'page',
      summary: 'Plinth is burning its latency error budget fast (answers slower than 500 ms)',
      description: `${(latencyFast * 100).toFixed(1)} % of requests took longer than 500 ms over the last hour(s) (SLO: 99 % within 500 ms).`,
      labels: { slo: 'latency' },
      value: latencyFast,
    })
  else {
    const slow = burn(v, httpSlow, 1440, 120, 3 * LATENCY_BUDGET)
    if (slow !== null)
      fire({
        rule: 'latency-slow-burn',
        alert: 'PlinthLatencySLOSlowBurn',
        kind: 'alert',
        severity: 'ticket',
        summary: 'Plinth is slowly burning its latency error budget (answers slower than 500 ms)',
        description: `${(slow * 100).toFixed(1)} % of requests took longer than 500 ms over the last day.`,
        labels: { slo: 'latency' },
        value: slow,
      })
  }

  // Per route over 15 minutes (the Prometheus rule: a 5-minute rate held for 10 minutes).
  const routes = new Map<string, { n: number; e5: number }>()
  const buckets: number[] = []
  for (const m of v.last(15))
    for (const [route, r] of Object.entries(m.http)) {
      const t = routes.get(route) ?? { n: 0, e5: 0 }
      t.n += r.n
      t.e5 += r.e5
      routes.set(route, t)
      r.b.forEach((c, i) => {
        buckets[i] = (buckets[i] ?? 0) + c
      })
    }
  if (v.observed >= 15) {
    for (const [route, t] of routes)
      if (t.n / (15 * 60) > 0.1 && t.e5 / t.n > 0.05)
        fire({
          rule: 'http-error-rate',
          alert: 'PlinthHighErrorRate',
          kind: 'alert',
          severity: 'ticket',
          summary: `Route ${route} answers more than 5 % 5xx`,
          description: `${((t.e5 / t.n) * 100).toFixed(1)} % of the ${t.n} answers of ${route} in the last 15 minutes were 5xx.`,
          labels: { route },
          value: t.e5 / t.n,
        })
    const total = [...routes.values()].reduce((s, t) => s + t.n, 0)
    const p99 = quantile(0.99, buckets)
    if (p99 !== null && p99 > 2.5 && total / (15 * 60) > 0.1)
      fire({
        rule: 'http-latency-p99',
        alert: 'PlinthHighLatencyP99',
        kind: 'alert',
        severity: 'ticket',
        summary: "Plinth's p99 latency is above 2.5 s",
        description: `The slowest 1 % of requests took ${p99.toFixed(2)} s or more over the last 15 minutes.`,
        labels: {},
        value: p99,
      })
  }

  for (const id of heldBy(v, 10, (g) => g.loopP99 > 0.2))
    fire({
      rule: 'event-loop-delay',
      alert: 'PlinthEventLoopDelayHigh',
      kind: 'alert',
      severity: 'ticket',
      summary: `Event-loop delay of instance ${id.slice(0, 8)} is above 200 ms (p99)`,
      description: 'The event loop was blocked for more than 200 ms at the 99th percentile for 10 minutes.',
      labels: { instance: id },
      value: v.last(1)[0]?.instances[id]?.loopP99 ?? 0,
    })
  for (const id of heldBy(v, 10, (g) => g.poolWaiting > 0))
    fire({
      rule: 'db-pool-waiting',
      alert: 'PlinthDatabasePoolSaturated',
      kind: 'alert',
      severity: 'ticket',
      summary: `Queries of instance ${id.slice(0, 8)} wait for a database connection`,
      description: 'For 10 minutes at least one query has always been waiting for a pooled connection.',
      labels: { instance: id },
      value: v.last(1)[0]?.instances[id]?.poolWaiting ?? 0,
    })
  for (const id of heldBy(v, 15, (g) => g.heapRatio > 0.85))
    fire({
      rule: 'memory-high',
      alert: 'PlinthMemoryHigh',
      kind: 'alert',
      severity: 'ticket',
      summary: `Heap of instance ${id.slice(0, 8)} is above 85 % of its limit`,
      description: 'The V8 heap used more than 85 % of its limit for 15 minutes.',
      labels: { instance: id },
      value: v.last(1)[0]?.instances[id]?.heapRatio ?? 0,
    })
  for (const id of heldBy(v, 10, (g) => g.redis === 0))
    fire({
      rule: 'redis-disconnected',
      alert: 'PlinthRedisDisconnected',
      kind: 'alert',
      severity: 'ticket',
      summary: `Instance ${id.slice(0, 8)} has lost Redis`,
      description:
        'Redis has been unreachable for 10 minutes; rate limits and caches work per process meanwhile.',
      labels: { instance: id },
      value: 0,
    })

  const jobs = new Map<string, { started: number; failed: number; dead: number }>()
  for (const m of v.last(15))
    for (const [name, j] of Object.entries(m.jobs)) {
      const t = jobs.get(name) ?? { started: 0, failed: 0, dead: 0 }
      t.started += j.started
      t.failed += j.failed
      t.dead += j.dead
      jobs.set(name, t)
    }
  for (const [name, j] of jobs) {
    if (j.failed > 5 && j.started > 0 && j.failed / j.started > 0.1)
      fire({
        rule: 'job-failures',
        alert: 'PlinthJobFailures',
        kind: 'alert',
        severity: 'ticket',
        summary: `Jobs of type ${name} keep failing`,
        description: `${j.failed} of ${j.started} attempts of ${name} failed in the last 15 minutes.`,
        labels: { name },
        value: j.failed / j.started,
      })
    if (j.dead > 0)
      fire({
        rule: 'jobs-dead-lettered',
        alert: 'PlinthJobsDeadLettered',
        kind: 'alert',
        severity: 'ticket',
        summary: `Jobs of type ${name} failed their last attempt`,
        description: `${j.dead} ${name} job(s) used up their retries in the last 15 minutes.`,
        labels: { name },
        value: j.dead,
      })
  }
  for (const [name, age] of Object.entries(live.queueOldestSeconds))
    if (age > 900)
      fire({
        rule: 'job-queue-stalled',
        alert: 'PlinthJobQueueStalled',
        kind: 'alert',
        severity: 'page',
        summary: `Jobs of type ${name} have waited more than 15 minutes to start`,
        description: `The oldest ${name} job that could run has waited ${Math.round(age / 60)} minutes.`,
        labels: { name },
        value: age,
      })
  if (v.observed >= 10) {
    const beats = v.last(10).reduce((s, m) => s + (m.jobs['plinth.heartbeat']?.completed ?? 0), 0)
    if (beats === 0)
      fire({
        rule: 'jobs-heartbeat-stale',
        alert: 'PlinthJobsHeartbeatStale',
        kind: 'alert',
        severity: 'page',
        summary: 'No Plinth worker has run the heartbeat job for 10 minutes',
        description: 'The plinth.heartbeat job, scheduled every minute, has not completed anywhere.',
        labels: {},
        value: 0,
      })
  }

  const lastBackup = v.all.reduce<number | null>(
    (m, x) => (x.backup.lastSuccess === null ? m : Math.max(m ?? 0, x.backup.lastSuccess)),
    null,
  )
  if (lastBackup !== null && v.now / 1000 - lastBackup > 3 * 3600)
    fire({
      rule: 'backup-too-old',
      alert: 'PlinthBackupTooOld',
      kind: 'alert',
      severity: 'ticket',
      summary: 'The newest Plinth backup is more than 3 hours old',
      description: `The last successful backup was ${Math.round((v.now / 1000 - lastBackup) / 3600)} hours ago.`,
      labels: {},
      value: v.now / 1000 - lastBackup,
    })
  const createFailures = v.last(120).reduce((s, m) => s + m.backup.createFailures, 0)
  if (createFailures > 0)
    fire({
      rule: 'backup-failed',
      alert: 'PlinthBackupFailed',
      kind: 'alert',
      severity: 'ticket',
      summary: 'A Plinth backup failed',
      description: `${createFailures} backup(s) failed to be created in the last 2 hours.`,
      labels: {},
      value: createFailures,
    })
  const verifyFailures = v.last(1440).reduce((s, m) => s + m.backup.verifyFailures, 0)
  if (verifyFailures > 0)
    fire({
      rule: 'backup-verification-failed',
      alert: 'PlinthBackupVerificationFailed',
      kind: 'alert',
      severity: 'page',
      summary: 'A Plinth backup failed its verification',
      description: `${verifyFailures} backup verification(s) failed in the last day.`,
      labels: {},
      value: verifyFailures,
    })

  const latest = v.last(2).at(-1)
  for (const [id, g] of Object.entries(latest?.instances ?? {})) {
    if (g.tlsExpiry === null) continue
    const left = g.tlsExpiry - v.now / 1000
    if (left < 14 * 86400) {
      const imminent = left < 3 * 86400
      fire({
        rule: imminent ? 'tls-certificate-expiry-imminent' : 'tls-certificate-expiring-soon',
        alert: imminent ? 'PlinthTlsCertificateExpiryImminent' : 'PlinthTlsCertificateExpiringSoon',
        kind: 'alert',
        severity: imminent ? 'page' : 'ticket',
        summary: `The TLS certificate served by instance ${id.slice(0, 8)} expires within ${imminent ? 3 : 14} days`,
        description: `The certificate in PLINTH_TLS_CERT_FILE expires in ${(left / 86400).toFixed(1)} days.`,
        labels: { instance: id },
        value: left,
      })
    }
  }

  // At least 1 a second over 5 minutes, and 5 times the average of the day before.
  const recent = v.last(5).reduce((s, m) => s + m.login.failures, 0) / 300
  if (recent > 1) {
    const before = v.all.filter((m) => m.t < v.now - 10 * MINUTE && m.t >= v.now - 1450 * MINUTE)
    const usual = before.length ? before.reduce((s, m) => s + m.login.failures, 0) / (before.length * 60) : 0
    if (recent > 5 * usual)
      fire({
        rule: 'login-failure-spike',
        alert: 'PlinthLoginFailureSpike',
        kind: 'security',
        severity: 'ticket',
        summary: 'Failed sign-ins are far above their usual rate',
        description: `${recent.toFixed(1)} failed sign-ins a second over 5 minutes, against ${usual.toFixed(2)} usually.`,
        labels: {},
        value: recent,
      })
  }
  return out
}
