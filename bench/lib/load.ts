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
  /** Responses by status code. */
  readonly statusCodeStats?: Record<string, { readonly count: number }>
}
interface AutocannonClient {
  setBody(body: string): void
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
    /** Called once per connection when it is made. */
    setupClient?: (client: AutocannonClient) => void
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
  /**
   * One body per connection instead of `body`: connection i sends `bodies[i % bodies.length]` for
   * its whole run (e.g. each connection signs in as its own account).
   */
  readonly bodies?: readonly string[]
}

export interface Sample {
  readonly rps: number
  readonly p50Ms: number
  readonly p99Ms: number
  readonly errors: number
  readonly non2xx: number
  /** The non-2xx responses by status code (`{ "429": 2 }`), when there were any. */
  readonly statuses?: Readonly<Record<string, number>>
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
  if (warm.errors + warm.non2xx > 0)
    problems.push(`${label}: ${warm.errors} errors, ${warm.non2xx} non-2xx${statusText(warm)}`)
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
  const { bodies, ...single } = request
  let nextClient = 0
  return new Promise((resolve, reject) => {
    const instance = autocannon(
      {
        ...single,
        ...(bodies?.length
          ? { setupClient: (client) => client.setBody(bodies[nextClient++ % bodies.length]!) }
          : {}),
        connections,
        duration: seconds,
        pipelining: 1,
        ...(overallRate === undefined ? {} : { overallRate }),
      },
      (err, result) => {
        activeLoad = undefined
        if (err) return reject(err)
        const cpu = process.cpuUsage(cpuBefore)
        const statuses = Object.fromEntries(
          Object.entries(result.statusCodeStats ?? {})
            .filter(([code]) => !code.startsWith('2'))
            .map(([code, { count }]) => [code, count]),
        )
        resolve({
          rps: result.requests.average,
          p50Ms: latencyUs.count > 0 ? latencyUs.percentile(50) / 1000 : 0,
          p99Ms: latencyUs.count > 0 ? latencyUs.percentile(99) / 1000 : 0,
          errors: result.errors,
          non2xx: result.non2xx,
          ...(Object.keys(statuses).length > 0 ? { statuses } : {}),
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

/** ` (429 ×2, 500 ×1)`: the non-2xx statuses of `sample`, or '' when it had none. */
export function statusText(sample: Sample): string {
  const entries = Object.entries(sample.statuses ?? {})
  return entries.length === 0 ? '' : ` (${entries.map(([code, n]) => `${code} ×${n}`).join(', ')})`
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
    ...(samples.some((s) => s.statuses)
      ? {
          statuses: samples.reduce<Record<string, number>>((all, s) => {
            for (const [code, n] of Object.entries(s.statuses ?? {})) all[code] = (all[code] ?? 0) + n
            return all
          }, {}),
        }
      : {}),
    clientCpu: round(median(samples.map((s) => s.clientCpu)), 2),
  }
}

export const round = (value: number, digits: number) => Math.round(value * 10 ** digits) / 10 ** digits
