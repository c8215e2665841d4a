import { randomUUID } from 'node:crypto'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { getHeapStatistics } from 'node:v8'
import type { ModuleContext } from '../../core/module.ts'
import type { LoginFailureLog } from './alert-metrics.ts'
import {
  entry,
  type JobCounts,
  LATENCY_BUCKETS,
  PROBE_ROUTES,
  type RouteCounts,
  type Sample,
} from './minutes.ts'

interface MetricValue {
  labels: Record<string, string | number>
  value: number
  metricName?: string
}

async function valuesOf(ctx: ModuleContext, name: string): Promise<MetricValue[]> {
  const metric = ctx.metrics.registry.getSingleMetric(name)
  if (!metric) return []
  return ((await metric.get()) as { values: MetricValue[] }).values
}

/** Cumulative figures of this process, keyed `metric|labels`, and what they were at the last sample. */
type Totals = Map<string, number>

async function readTotals(ctx: ModuleContext): Promise<Totals> {
  const t: Totals = new Map()
  const add = (key: string, v: number) => t.set(key, (t.get(key) ?? 0) + v)
  for (const v of await valuesOf(ctx, 'http_requests_total')) {
    const route = String(v.labels.route)
    if (PROBE_ROUTES.has(route)) continue
    add(`n|${route}`, v.value)
    if (String(v.labels.status_code).startsWith('5')) add(`e5|${route}`, v.value)
  }
  for (const v of await valuesOf(ctx, 'http_request_duration_seconds')) {
    if (v.metricName !== 'http_request_duration_seconds_bucket') continue
    const route = String(v.labels.route)
    if (PROBE_ROUTES.has(route)) continue
    add(`le|${route}|${v.labels.le}`, v.value)
  }
  const jobs = [
    ['started', 'plinth_jobs_started_total'],
    ['failed', 'plinth_jobs_failed_total'],
    ['dead', 'plinth_jobs_dead_lettered_total'],
    ['completed', 'plinth_jobs_completed_total'],
  ] as const
  for (const [field, metric] of jobs)
    for (const v of await valuesOf(ctx, metric)) add(`job|${field}|${v.labels.name}`, v.value)
  for (const v of await valuesOf(ctx, 'plinth_backup_failures_total'))
    add(`backup|${v.labels.stage}`, v.value)
  for (const v of await valuesOf(ctx, 'plinth_backup_verification_failures_total'))
    add('backup|verify-counter', v.value)
  return t
}

/** `cur - prev` per key; a key that went down was reset (a new metric): its value is the delta. */
function deltas(cur: Totals, prev: Totals): Totals {
  const d: Totals = new Map()
  for (const [k, v] of cur) {
    const p = prev.get(k) ?? 0
    const delta = v >= p ? v - p : v
    if (delta > 0) d.set(k, delta)
  }
  return d
}

function toSample(
  d: Totals,
): Omit<Sample, 'login' | 'gauges' | 'backup'> & { backup: Omit<Sample['backup'], 'lastSuccess'> } {
  const http: Record<string, RouteCounts> = {}
  const jobs: Record<string, JobCounts> = {}
  const route = (r: string) => entry(http, r, () => ({ n: 0, e5: 0, b: LATENCY_BUCKETS.map(() => 0) }))
  // Bucket counts are cumulative by `le`; the sample keeps them per bucket.
  const cumulative = new Map<string, number[]>()
  let createFailures = 0
  let verifyFailures = 0
  let verifyCounter = 0
  for (const [key, v] of d) {
    const parts = key.split('|')
    if (parts[0] === 'n') route(parts[1]!).n += v
    else if (parts[0] === 'e5') route(parts[1]!).e5 += v
    else if (parts[0] === 'le') {
      const le = parts[2] === '+Inf' ? Number.POSITIVE_INFINITY : Number(parts[2])
      const i = LATENCY_BUCKETS.indexOf(le)
      if (i < 0) continue
      const c = cumulative.get(parts[1]!) ?? LATENCY_BUCKETS.map(() => 0)
      c[i]! += v
      cumulative.set(parts[1]!, c)
    } else if (parts[0] === 'job') {
      const j = entry(jobs, parts[2]!, () => ({ started: 0, failed: 0, dead: 0, completed: 0 }))
      j[parts[1] as keyof JobCounts] += v
    } else if (key === 'backup|create') createFailures += v
    else if (key === 'backup|verify') verifyFailures += v
    else if (key === 'backup|verify-counter') verifyCounter += v
  }
  for (const [r, c] of cumulative) route(r).b = c.map((v, i) => (i === 0 ? v : Math.max(0, v - c[i - 1]!)))
  return { http, jobs, backup: { createFailures, verifyFailures: Math.max(verifyFailures, verifyCounter) } }
}

/**
 * Every `PLINTH_ALERTS_INTERVAL`, records what this process measured since the last time into
 * `alert_samples`: counter deltas (requests, 5xx and latency buckets by route, job outcomes by type,
 * failed sign-ins by source, backup failures) and gauges (pool waiting, event-loop delay, heap,
 * Redis, certificate expiry). The elected evaluator folds every process's samples together.
 */
export function createSampler(
  ctx: ModuleContext,
  deps: { logins: LoginFailureLog; tlsExpiry: () => number | null },
) {
  const instanceId = randomUUID()
  const loop = monitorEventLoopDelay({ resolution: 20 })
  let prev: Totals | undefined
  let timer: NodeJS.Timeout | undefined
  let running: Promise<void> | undefined

  async function sampleOnce(): Promise<void> {
    const cur = await readTotals(ctx)
    const base = prev ?? cur
    prev = cur
    const counted = toSample(deltas(cur, base))
    const lastSuccess = (await valuesOf(ctx, 'plinth_backup_last_success_timestamp_seconds')).reduce<
      number | null
    >((m, v) => Math.max(m ?? 0, v.value), null)
    const redis = (await valuesOf(ctx, 'plinth_redis_connected'))[0]?.value
    const stats = ctx.db.poolStats()
    const sample: Sample = {
      ...counted,
      backup: { ...counted.backup, lastSuccess },
      login: deps.logins.take(),
      gauges: {
        poolWaiting: stats.waiting,
        loopP99: loop.percentile(99) / 1e9,
        heapRatio: process.memoryUsage().heapUsed / getHeapStatistics().heap_size_limit,
        redis: redis === undefined ? null : redis,
        tlsExpiry: deps.tlsExpiry(),
      },
    }
    loop.reset()
    await ctx.db.kysely
      .insertInto('alert_samples')
      .values({ instance_id: instanceId, at: new Date(ctx.now()), data: JSON.stringify(sample) })
      .execute()
  }

  const tick = () => {
    running = sampleOnce()
      .catch((err: unknown) => ctx.logger.warn({ err }, 'alert sample not recorded'))
      .finally(() => {
        running = undefined
      })
  }

  return {
    instanceId,
    sampleOnce,
    start() {
      loop.enable()
      // The first read only sets the baseline of the counters.
      void readTotals(ctx)
        .then((t) => {
          prev = t
        })
        .catch(() => {})
      timer = setInterval(tick, ctx.config.alertsInterval)
      timer.unref()
    },
    async stop() {
      if (timer) clearInterval(timer)
      timer = undefined
      loop.disable()
      deps.logins.stop()
      await running
    },
  }
}
