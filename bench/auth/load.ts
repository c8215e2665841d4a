/**
 * The load generator of the auth benchmark: like bench/http/load.ts (autocannon, latency from each
 * response's own timing), with a method, headers and a body, and the status codes counted.
 */
import { createRequire } from 'node:module'
import { createHistogram } from 'node:perf_hooks'
import type { Sample } from '../http/load.ts'

export { aggregate, median, round, type Sample } from '../http/load.ts'

interface AutocannonResult {
  readonly requests: { readonly average: number }
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
    method?: string
    headers?: Record<string, string>
    body?: string
  },
  done: (err: Error | null, result: AutocannonResult) => void,
) => AutocannonInstance
const autocannon = createRequire(import.meta.url)('autocannon') as Autocannon

export interface Request {
  readonly url: string
  readonly method?: 'GET' | 'POST'
  readonly headers?: Record<string, string>
  readonly body?: string
}

let activeLoad: AutocannonInstance | undefined

/** Ends the running load early (its promise then resolves with what was measured so far). */
export function stopLoad(): void {
  activeLoad?.stop()
}

/** Sends `request` over `connections` for `seconds`, one request in flight per connection. */
export function load(request: Request, connections: number, seconds: number): Promise<Sample> {
  const latencyUs = createHistogram()
  const cpuBefore = process.cpuUsage()
  const started = performance.now()
  return new Promise((resolve, reject) => {
    const instance = autocannon(
      { ...request, connections, duration: seconds, pipelining: 1 },
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
