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
  const checks: HealthCheck[] = [...(options.checks ?? [])]
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
      checks.push(check)
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
