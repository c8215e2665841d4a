import { getHeapStatistics } from 'node:v8'
import underPressure from '@fastify/under-pressure'
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { PlinthError } from '../../core/errors.ts'
import '../route-config.ts'

export interface PressureOptions {
  /** Milliseconds; 0 turns the check off. */
  readonly maxEventLoopDelay: number
  /** Share of V8's heap limit; 0 turns the check off. */
  readonly maxHeapUsedRatio: number
}

export const RETRY_AFTER_SECONDS = 10

/**
 * Under overload (event-loop delay or heap above thresholds) requests get 503 with Retry-After
 * instead of queueing without bound.
 */
async function pressure(app: FastifyInstance, opts: PressureOptions): Promise<void> {
  const heapLimit = getHeapStatistics().heap_size_limit
  await app.register(underPressure, {
    maxEventLoopDelay: opts.maxEventLoopDelay,
    maxHeapUsedBytes: opts.maxHeapUsedRatio > 0 ? Math.floor(heapLimit * opts.maxHeapUsedRatio) : 0,
    retryAfter: RETRY_AFTER_SECONDS,
    pressureHandler: (request) => {
      if (request.routeOptions.config.pressureExempt) return undefined
      return Promise.reject(
        new PlinthError('PLINTH_HTTP_OVERLOADED', undefined, {
          headers: { 'retry-after': String(RETRY_AFTER_SECONDS) },
        }),
      )
    },
  })
}

export default fp(pressure, { name: 'plinth-pressure', fastify: '5.x' })
