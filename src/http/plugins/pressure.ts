import { getHeapStatistics } from 'node:v8'
import underPressure from '@fastify/under-pressure'
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { PlinthError } from '../../shared/errors.ts'
import '../route-config.ts'

export interface PressureOptions {
  /** Milliseconds; 0 turns the check off. */
  readonly maxEventLoopDelay: number
  /** Share of V8's heap limit; 0 turns the check off. */
  readonly maxHeapUsedRatio: number
}

export const RETRY_AFTER_SECONDS = 10
const SAMPLE_INTERVAL_MS = 1000
/** After `ready`, how long measured lag is not held against requests. */
export const STARTUP_GRACE_MS = 2 * SAMPLE_INTERVAL_MS

/**
 * Under overload (event-loop delay or heap above thresholds) requests get 503 with Retry-After
 * instead of queueing without bound.
 */
async function pressure(app: FastifyInstance, opts: PressureOptions): Promise<void> {
  const heapLimit = getHeapStatistics().heap_size_limit
  // The delay measured while the process boots (WASM compilation of the embedded database,
  // migrations) is not load: requests in the first samples after `ready` are never refused for it.
  let graceUntil = Number.POSITIVE_INFINITY
  app.addHook('onReady', async () => {
    graceUntil = Date.now() + STARTUP_GRACE_MS
  })
  await app.register(underPressure, {
    sampleInterval: SAMPLE_INTERVAL_MS,
    maxEventLoopDelay: opts.maxEventLoopDelay,
    maxHeapUsedBytes: opts.maxHeapUsedRatio > 0 ? Math.floor(heapLimit * opts.maxHeapUsedRatio) : 0,
    retryAfter: RETRY_AFTER_SECONDS,
    pressureHandler: (request) => {
      if (request.routeOptions.config.pressureExempt || Date.now() < graceUntil) return undefined
      return Promise.reject(
        new PlinthError('PLINTH_HTTP_OVERLOADED', undefined, {
          headers: { 'retry-after': String(RETRY_AFTER_SECONDS) },
        }),
      )
    },
  })
}

export default fp(pressure, { name: 'plinth-pressure', fastify: '5.x' })
