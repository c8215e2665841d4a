import { monitorEventLoopDelay, performance } from 'node:perf_hooks'
import { getHeapStatistics } from 'node:v8'
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { PlinthError } from '../../shared/errors.ts'
import { routeConfig } from '../route-config.ts'

export interface PressureOptions {
  /** Milliseconds; 0 turns the check off. */
  readonly maxEventLoopDelay: number
  /** Share of V8's heap limit; 0 turns the check off. */
  readonly maxHeapUsedRatio: number
}

export const RETRY_AFTER_SECONDS = 10
const SAMPLE_INTERVAL_MS = 1000
/** The event-loop delay histogram's resolution; the mean delay is counted above it. */
const RESOLUTION_MS = 10
/** After `ready`, how long measured lag is not held against requests. */
export const STARTUP_GRACE_MS = 2 * SAMPLE_INTERVAL_MS

/** The last sample (the same fields @fastify/under-pressure, which this replaces, decorated). */
export interface PressureSample {
  /** Mean event-loop delay over the last sample interval above the histogram's resolution, ms. */
  readonly eventLoopDelay: number
  readonly rssBytes: number
  readonly heapUsed: number
  /** Event-loop utilisation since start (0-1). */
  readonly eventLoopUtilized: number
}

declare module 'fastify' {
  interface FastifyInstance {
    /** True when the last sample is above a threshold (requests not exempt then get 503). */
    isUnderPressure(): boolean
    memoryUsage(): PressureSample
  }
}

/**
 * Under overload (event-loop delay or heap above thresholds) requests get 503 with Retry-After
 * instead of queueing without bound. Sampled once a second (the event-loop delay as the mean of a
 * `monitorEventLoopDelay` histogram minus its 10 ms resolution, the heap from
 * `process.memoryUsage()`), as @fastify/under-pressure did; the per-request check reads two
 * numbers and, only under pressure, the route's config (that plugin read `request.routeOptions`,
 * a getter building a 13-field object, on every request).
 */
async function pressure(app: FastifyInstance, opts: PressureOptions): Promise<void> {
  const maxDelay = opts.maxEventLoopDelay
  const maxHeapUsed =
    opts.maxHeapUsedRatio > 0 ? Math.floor(getHeapStatistics().heap_size_limit * opts.maxHeapUsedRatio) : 0
  // The delay measured while the process boots (WASM compilation of the embedded database,
  // migrations) is not load: requests in the first samples after `ready` are never refused for it.
  let graceUntil = Number.POSITIVE_INFINITY
  app.addHook('onReady', async () => {
    graceUntil = Date.now() + STARTUP_GRACE_MS
  })

  let sample: PressureSample = { eventLoopDelay: 0, rssBytes: 0, heapUsed: 0, eventLoopUtilized: 0 }
  let underPressure = false
  const histogram = monitorEventLoopDelay({ resolution: RESOLUTION_MS })
  histogram.enable()
  const startedElu = performance.eventLoopUtilization()
  const timer = setTimeout(function take() {
    const memory = process.memoryUsage()
    const delay = Math.max(0, histogram.mean / 1e6 - RESOLUTION_MS)
    histogram.reset()
    sample = {
      eventLoopDelay: Number.isNaN(delay) ? Number.POSITIVE_INFINITY : delay,
      rssBytes: memory.rss,
      heapUsed: memory.heapUsed,
      eventLoopUtilized: performance.eventLoopUtilization(startedElu).utilization,
    }
    underPressure =
      (maxDelay > 0 && sample.eventLoopDelay > maxDelay) || (maxHeapUsed > 0 && sample.heapUsed > maxHeapUsed)
    timer.refresh()
  }, SAMPLE_INTERVAL_MS)
  timer.unref()
  app.addHook('onClose', (_instance, done) => {
    clearTimeout(timer)
    histogram.disable()
    done()
  })

  app.decorate('isUnderPressure', () => underPressure)
  app.decorate('memoryUsage', () => sample)
  if (maxDelay <= 0 && maxHeapUsed <= 0) return

  app.addHook('onRequest', (request, _reply, done) => {
    if (!underPressure || Date.now() < graceUntil || routeConfig(request).pressureExempt) return done()
    done(
      new PlinthError('PLINTH_HTTP_OVERLOADED', undefined, {
        headers: { 'retry-after': String(RETRY_AFTER_SECONDS) },
      }),
    )
  })
}

export default fp(pressure, { name: 'plinth-pressure', fastify: '5.x' })
