import { monitorEventLoopDelay } from 'node:perf_hooks'
import { getHeapStatistics } from 'node:v8'

export type ComponentStatus = 'up' | 'degraded' | 'down'
export type OverallStatus = 'ok' | 'degraded' | 'down'

export interface CheckResult {
  readonly status: ComponentStatus
  readonly details?: Readonly<Record<string, unknown>>
}

/**
 * One component's check. `critical` components decide readiness: when one is down the instance
 * takes no traffic. Non-critical ones (Redis, event loop, memory) only degrade `/health`.
 */
export interface HealthCheck {
  readonly name: string
  readonly critical: boolean
  check(): Promise<CheckResult>
}

export interface ComponentReport {
  readonly status: ComponentStatus
  readonly latencyMs: number
  readonly critical: boolean
  readonly details?: Readonly<Record<string, unknown>>
  readonly error?: string
}

export interface HealthReport {
  readonly status: OverallStatus
  readonly components: Readonly<Record<string, ComponentReport>>
}

export interface Health {
  /** Runs every check in parallel, each bounded by the timeout. */
  report(): Promise<HealthReport>
  /** Runs the critical checks only. */
  readiness(): Promise<HealthReport>
  add(check: HealthCheck): void
}

async function runCheck(check: HealthCheck, timeoutMs: number): Promise<ComponentReport> {
  const started = performance.now()
  let timer: NodeJS.Timeout | undefined
  try {
    const result = await Promise.race([
      check.check(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs)
      }),
    ])
    return { ...result, critical: check.critical, latencyMs: Math.round(performance.now() - started) }
  } catch (err) {
    return {
      status: 'down',
      critical: check.critical,
      latencyMs: Math.round(performance.now() - started),
      error: (err as Error).message,
    }
  } finally {
    clearTimeout(timer)
  }
}

function overall(components: Record<string, ComponentReport>): OverallStatus {
  const all = Object.values(components)
  if (all.some((c) => c.critical && c.status === 'down')) return 'down'
  if (all.some((c) => c.status !== 'up')) return 'degraded'
  return 'ok'
}

export function createHealth(options: { timeoutMs: number; checks?: readonly HealthCheck[] }): Health {
  // Concurrent probes share each check's run: a burst of /health calls costs one query per check.
  const shared = (c: HealthCheck) => cachedCheck(c, { ttlMs: 0 })
  const checks: HealthCheck[] = (options.checks ?? []).map(shared)
  async function run(selected: HealthCheck[]): Promise<HealthReport> {
    const reports = await Promise.all(selected.map((c) => runCheck(c, options.timeoutMs)))
    const components = Object.fromEntries(selected.map((c, i) => [c.name, reports[i]!]))
    return { status: overall(components), components }
  }
  return {
    report: () => run(checks),
    readiness: () => run(checks.filter((c) => c.critical)),
    add(check) {
      if (checks.some((c) => c.name === check.name))
        throw new Error(`health check "${check.name}" is already registered`)
      checks.push(shared(check))
    },
  }
}

/** Event-loop delay since the previous check: degraded above `degradedMs` at the 99th percentile. */
export function eventLoopCheck(degradedMs = 200): HealthCheck & { stop(): void } {
  const histogram = monitorEventLoopDelay({ resolution: 10 })
  histogram.enable()
  return {
    name: 'eventLoop',
    critical: false,
    async check() {
      const ms = (ns: number) => Math.round((ns / 1e6) * 10) / 10
      const p99 = histogram.count > 0 ? ms(histogram.percentile(99)) : 0
      const details = { p99Ms: p99, maxMs: histogram.count > 0 ? ms(histogram.max) : 0 }
      histogram.reset()
      return { status: p99 > degradedMs ? 'degraded' : 'up', details }
    },
    stop: () => histogram.disable(),
  }
}

/** Heap use against V8's limit: degraded above `degradedRatio`. */
export function memoryCheck(degradedRatio = 0.85): HealthCheck {
  return {
    name: 'memory',
    critical: false,
    async check() {
      const { rss, heapUsed } = process.memoryUsage()
      const limit = getHeapStatistics().heap_size_limit
      const mb = (b: number) => Math.round(b / 1024 / 1024)
      const ratio = heapUsed / limit
      return {
        status: ratio > degradedRatio ? 'degraded' : 'up',
        details: {
          rssMb: mb(rss),
          heapUsedMb: mb(heapUsed),
          heapLimitMb: mb(limit),
          heapUsedRatio: Math.round(ratio * 1000) / 1000,
        },
      }
    },
  }
}

/**
 * A check that is cheap to call often: concurrent callers share one run, and a result that
 * `keep` accepts (default: every result) is reused for `ttlMs`. Probes hit this on every request
 * from load balancers, so the database sees at most one query per component per window.
 */
export function cachedCheck(
  check: HealthCheck,
  options: { ttlMs: number; keep?: (result: CheckResult) => boolean },
): HealthCheck & { invalidate(): void } {
  let inFlight: Promise<CheckResult> | undefined
  let cached: { result: CheckResult; until: number } | undefined
  // Bumped by invalidate(): a run that started before it neither caches nor is shared after it.
  let generation = 0
  return {
    name: check.name,
    critical: check.critical,
    check() {
      if (cached && performance.now() < cached.until) return Promise.resolve(cached.result)
      if (inFlight) return inFlight
      const started = generation
      const run = check
        .check()
        .then((result) => {
          if (started === generation && options.ttlMs > 0 && (options.keep?.(result) ?? true))
            cached = { result, until: performance.now() + options.ttlMs }
          return result
        })
        .finally(() => {
          if (inFlight === run) inFlight = undefined
        })
      inFlight = run
      return run
    },
    invalidate() {
      generation++
      cached = undefined
      inFlight = undefined
    },
  }
}
