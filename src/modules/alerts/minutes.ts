/**
 * What the processes measure (one `Sample` per process per interval: deltas of its counters and
 * the worst of its gauges) and what the evaluator folds them into (one `MinuteAgg` per minute,
 * every process summed). Plain JSON, stored in `alert_samples` and `alert_minutes`.
 */

/** The upper bounds of `http_request_duration_seconds` (and +Inf last). */
export const LATENCY_BUCKETS = [
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
  Number.POSITIVE_INFINITY,
]
/** The SLO's threshold: the index of the 0.5 s bucket. */
export const SLOW_BUCKET = LATENCY_BUCKETS.indexOf(0.5)
/** Probes and the scrape: not what users call, so not in the SLIs (as in the Prometheus rules). */
export const PROBE_ROUTES = new Set(['/live', '/ready', '/health', '/api/metrics'])

export interface RouteCounts {
  /** Requests answered. */
  n: number
  /** 5xx answers. */
  e5: number
  /** Per latency bucket (not cumulative), aligned with LATENCY_BUCKETS. */
  b: number[]
}
export interface JobCounts {
  started: number
  failed: number
  dead: number
  completed: number
}
export interface LoginSource {
  n: number
  /** Distinct accounts tried from the source (user ids, or `?` + a count for unknown addresses). */
  accounts: string[]
}
export interface InstanceGauges {
  /** Queries waiting for a pooled connection (lowest seen in the period). */
  poolWaiting: number
  /** Event-loop delay p99, seconds (lowest seen in the period). */
  loopP99: number
  /** Heap used / V8 heap limit (lowest seen in the period). */
  heapRatio: number
  /** 1 connected, 0 not, null without Redis (highest seen in the period). */
  redis: number | null
  /** When the certificate served directly expires (Unix seconds); null without TLS. */
  tlsExpiry: number | null
}

export interface Sample {
  http: Record<string, RouteCounts>
  jobs: Record<string, JobCounts>
  login: { failures: number; sources: Record<string, LoginSource> }
  backup: { createFailures: number; verifyFailures: number; lastSuccess: number | null }
  gauges: InstanceGauges
}

export interface MinuteAgg {
  /** The minute's start, ms since the epoch. */
  t: number
  http: Record<string, RouteCounts>
  jobs: Record<string, JobCounts>
  login: { failures: number; sources: Record<string, LoginSource> }
  backup: { createFailures: number; verifyFailures: number; lastSuccess: number | null }
  instances: Record<string, InstanceGauges>
}

/** Distinct accounts kept per source and minute: enough to see "many", bounded in size. */
export const MAX_ACCOUNTS_PER_SOURCE = 200
/** Sources kept per minute (the busiest). */
export const MAX_SOURCES = 100

/** `record[key]`, created with `make()` when absent. */
export function entry<T>(record: Record<string, T>, key: string, make: () => T): T {
  let v = record[key]
  if (v === undefined) {
    v = make()
    record[key] = v
  }
  return v
}

export function emptyMinute(t: number): MinuteAgg {
  return {
    t,
    http: {},
    jobs: {},
    login: { failures: 0, sources: {} },
    backup: { createFailures: 0, verifyFailures: 0, lastSuccess: null },
    instances: {},
  }
}

function addRoute(into: Record<string, RouteCounts>, route: string, c: RouteCounts) {
  const r = entry(into, route, () => ({ n: 0, e5: 0, b: LATENCY_BUCKETS.map(() => 0) }))
  r.n += c.n
  r.e5 += c.e5
  for (let i = 0; i < r.b.length; i++) r.b[i]! += c.b[i] ?? 0
}

export function mergeSources(into: Record<string, LoginSource>, from: Record<string, LoginSource>) {
  for (const [ip, s] of Object.entries(from)) {
    const t = entry(into, ip, () => ({ n: 0, accounts: [] as string[] }))
    t.n += s.n
    for (const a of s.accounts)
      if (t.accounts.length < MAX_ACCOUNTS_PER_SOURCE && !t.accounts.includes(a)) t.accounts.push(a)
  }
}

/** Adds one process's sample into a minute. */
export function foldSample(minute: MinuteAgg, instance: string, s: Sample): void {
  for (const [route, c] of Object.entries(s.http)) addRoute(minute.http, route, c)
  for (const [name, c] of Object.entries(s.jobs)) {
    const j = entry(minute.jobs, name, () => ({ started: 0, failed: 0, dead: 0, completed: 0 }))
    j.started += c.started
    j.failed += c.failed
    j.dead += c.dead
    j.completed += c.completed
  }
  minute.login.failures += s.login.failures
  mergeSources(minute.login.sources, s.login.sources)
  minute.backup.createFailures += s.backup.createFailures
  minute.backup.verifyFailures += s.backup.verifyFailures
  if (s.backup.lastSuccess !== null)
    minute.backup.lastSuccess = Math.max(minute.backup.lastSuccess ?? 0, s.backup.lastSuccess)
  const g = minute.instances[instance]
  minute.instances[instance] = g
    ? {
        poolWaiting: Math.min(g.poolWaiting, s.gauges.poolWaiting),
        loopP99: Math.min(g.loopP99, s.gauges.loopP99),
        heapRatio: Math.min(g.heapRatio, s.gauges.heapRatio),
        redis: g.redis === null ? s.gauges.redis : Math.max(g.redis, s.gauges.redis ?? 0),
        tlsExpiry: s.gauges.tlsExpiry ?? g.tlsExpiry,
      }
    : { ...s.gauges }
}

/** The quantile `q` of a bucket histogram (linear within the bucket, as PromQL's histogram_quantile). */
export function quantile(q: number, buckets: readonly number[]): number | null {
  const total = buckets.reduce((s, v) => s + v, 0)
  if (total === 0) return null
  const rank = q * total
  let seen = 0
  for (let i = 0; i < buckets.length; i++) {
    const count = buckets[i]!
    if (seen + count >= rank && count > 0) {
      const upper = LATENCY_BUCKETS[i]!
      const lower = i === 0 ? 0 : LATENCY_BUCKETS[i - 1]!
      if (!Number.isFinite(upper)) return lower
      return lower + (upper - lower) * ((rank - seen) / count)
    }
    seen += count
  }
  return LATENCY_BUCKETS.at(-2)!
}
