import { Redis } from 'ioredis'
import type { Logger } from 'pino'
import type { PlinthConfig } from '../../config/config.schema.ts'
import { redactUrl } from '../../config/load-config.ts'
import type { HealthCheck } from '../../observability/health.ts'
import { backoffDelay } from '../db/retry.ts'

/**
 * Redis is optional and holds only what can be lost, so it never blocks the boot: the client
 * reconnects forever with backoff, commands fail fast while it is away (no offline queue), and
 * `/health` reports it degraded rather than the instance unready.
 */
export interface RedisHandle {
  readonly client: Redis
  readonly target: string
  /** Resolves once connected, or after `waitMs` whatever the state (reconnection goes on). */
  connect(waitMs: number): Promise<boolean>
  healthCheck(): HealthCheck
  close(): Promise<void>
}

export function createRedis(
  config: Pick<PlinthConfig, 'redisUrl' | 'redisPrefix' | 'dbConnectTimeout'> &
    Partial<Pick<PlinthConfig, 'redisCommandTimeout'>> & { redisUrl: string },
  deps: { logger: Logger },
): RedisHandle {
  const log = deps.logger.child({ component: 'redis' })
  const target = redactUrl(config.redisUrl)
  let outage = false
  const client = new Redis(config.redisUrl, {
    lazyConnect: true,
    keyPrefix: config.redisPrefix,
    connectTimeout: config.dbConnectTimeout,
    maxRetriesPerRequest: 1,
    // A half-open connection (nothing closes, nothing answers) would otherwise hold commands forever.
    ...(config.redisCommandTimeout ? { commandTimeout: config.redisCommandTimeout } : {}),
    enableOfflineQueue: false,
    retryStrategy(attempt) {
      const delayMs = Math.round(backoffDelay(attempt, { initialDelayMs: 200, maxDelayMs: 10_000 }))
      log.warn({ attempt, delayMs, target }, 'redis not reachable, retrying')
      return delayMs
    },
  })
  client.on('ready', () => {
    outage = false
    log.info({ target }, 'redis connected')
  })
  // Without an 'error' listener ioredis would throw; one warning per outage is enough, retries log their own line.
  client.on('error', (err) => {
    if (outage) return
    outage = true
    log.warn({ target, reason: err.message }, 'redis connection lost')
  })

  return {
    client,
    target,
    async connect(waitMs) {
      if (client.status === 'ready') return true
      const ready = new Promise<boolean>((resolve) => {
        const onReady = () => {
          clearTimeout(timer)
          resolve(true)
        }
        const timer = setTimeout(() => {
          client.off('ready', onReady)
          resolve(false)
        }, waitMs)
        client.once('ready', onReady)
      })
      if (client.status === 'wait') client.connect().catch(() => {})
      return ready
    },
    healthCheck: () => ({
      name: 'redis',
      critical: false,
      async check() {
        if (client.status !== 'ready') return { status: 'down', details: { state: client.status } }
        await client.ping()
        return { status: 'up', details: { state: client.status } }
      },
    }),
    async close() {
      if (client.status === 'end') return
      try {
        await client.quit()
      } catch {
        client.disconnect()
      }
    },
  }
}
