/**
 * The load generator every benchmark shares: autocannon's programmatic API, with latency taken from
 * each response's own timing, and how runs are combined (median of each figure, errors summed).
 */
import { createRequire } from 'node:module'
import { createHistogram } from 'node:perf_hooks'

interface AutocannonResult {
  readonly requests: { readonly average: number }
  /** Socket errors and timeouts. */
  readonly errors: number
  readonly non2xx: number
}
interface AutocannonInstance {
  stop(): void
  on(event: 'response', listener: (client: unknown, status: number, bytes: number, ms: number) => void): void
}
type Autocannon = (
  options: {
    url: string
    connections: number
    duration: number
    pipelining: number
    /** Requests per second over all connections (a fixed offered load); unset: as fast as possible. */
    overallRate?: number
    method?: string
    headers?: Record<string, string>
    body?: string
  },
  done: (err: Error | null, result: AutocannonResult) => void,
) => AutocannonInstance
// autocannon ships no types; this is the slice of its programmatic API used here.
const autocannon = createRequire(import.meta.url)('autocannon') as Autocannon

export interface Request {
  readonly url: string
  readonly method?: 'GET' | 'POST'
  readonly headers?: Record<string, string>
  readonly body?: string
}

export interface Sample {
  readonly rps: number
  readonly p50Ms: number
  readonly p99Ms: number
  readonly errors: number
  readonly non2xx: number
  /** Responses received (2xx or not). */
  readonly count?: number
  /** Cores the load generator (this process) kept busy: near 1 means autocannon itself was the limit. */
  readonly clientCpu: number
}

let activeLoad: AutocannonInstance | undefined

/** Ends the running load early (its promise then resolves with what was measured so far). */
export function stopLoad(): void {
  activeLoad?.stop()
}

/**
 * A warm-up run of `request`: its figures are discarded, but errors or non-2xx responses are noted in
 * `problems` under `label` (e.g. "me warm-up, round 2").
 */
export async function warmUp(
  request: Request,
  connections: number,
  seconds: number,
  label: string,
  problems: string[],
): Promise<void> {
  const warm = await load(request, connections, seconds)
  if (warm.errors + warm.non2xx > 0) problems.push(`${label}: ${warm.errors} errors, ${warm.non2xx} non-2xx`)
}

/**
 * Sends `request` over `connections` for `seconds`, one request in flight per connection. Latency
 * percentiles come from every response's own timing (microsecond resolution), not autocannon's
 * whole-millisecond histogram.
 */
export function load(
  request: Request,
  connections: number,
  seconds: number,
  overallRate?: number,
): Promise<Sample> {
  const latencyUs = createHistogram()
  const cpuBefore = process.cpuUsage()
  const started = performance.now()
  return new Promise((resolve, reject) => {
    const instance = autocannon(
      {
        ...request,
        connections,
        duration: seconds,
        pipelining: 1,
        ...(overallRate === undefined ? {} : { overallRate }),
      },
      (err, result) => {
        activeLoad = undefined
        if (err) return reject(err)
        const cpu = process.cpuUsage(cpuBefore)
        resolve({
          rps: result.requests.average,
          p50Ms: latencyUs.count > 0 ? latencyUs.percentile(50) / 1000 : 0,
          p99Ms: latencyUs.count > 0 ? latencyUs.percentile(99) / 1000 : 0,
          errors: result.errors,
          non2xx: result.non2xx,
          count: latencyUs.count,
          clientCpu: (cpu.user + cpu.system) / 1000 / (performance.now() - started),
        })
      },
    )
    instance.on('response', (_client, _status, _bytes, ms) =>
      latencyUs.record(Math.max(1, Math.round(ms * 1000))),
    )
    activeLoad = instance
  })
}

export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

/** The median of each figure over the runs; errors and non-2xx are summed. */
export function aggregate(samples: readonly Sample[]): Sample {
  return {
    rps: Math.round(median(samples.map((s) => s.rps))),
    p50Ms: round(median(samples.map((s) => s.p50Ms)), 2),
    p99Ms: round(median(samples.map((s) => s.p99Ms)), 2),
    errors: samples.reduce((n, s) => n + s.errors, 0),
    non2xx: samples.reduce((n, s) => n + s.non2xx, 0),
    clientCpu: round(median(samples.map((s) => s.clientCpu)), 2),
  }
}

export const round = (value: number, digits: number) => Math.round(value * 10 ** digits) / 10 ** digits
