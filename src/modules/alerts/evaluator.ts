import type pg from 'pg'
import type { ModuleContext } from '../../core/module.ts'
import { createAnomalySignals } from './anomaly-signals.ts'
import { evaluateConditions, type Firing, fingerprintOf, Minutes } from './conditions.ts'
import type { IncidentService } from './incidents.service.ts'
import { emptyMinute, foldSample, type MinuteAgg, type Sample } from './minutes.ts'
import { detectCredentialStuffing } from './stuffing.ts'

/** The session-level advisory lock whose holder is the one evaluator ("plnt", 24). */
const LOCK = [0x706c6e74, 24] as const
const MINUTE = 60_000
/** Minutes kept in memory and in `alert_minutes`: the longest window (1 day) and some. */
const KEEP_MINUTES = 1450
/** Samples are folded within seconds; kept a while for a newly elected evaluator. */
const KEEP_SAMPLES_MS = 15 * MINUTE
/** Minutes replayed into the anomaly detectors on election (their window and warm-up). */
const REPLAY_MINUTES = 90

/**
 * The one evaluator across replicas. Every worker process ticks every `PLINTH_ALERTS_INTERVAL`;
 * the one that holds the advisory lock (on a connection it keeps for that purpose) folds every
 * process's new samples into minute aggregates, evaluates the conditions, the anomaly detectors and
 * the credential-stuffing pattern, and opens, touches, resolves and escalates incidents. When its
 * connection or process dies, PostgreSQL releases the lock and another worker takes over at its
 * next tick, reloading the minutes from `alert_minutes`.
 */
export function createEvaluator(ctx: ModuleContext, incidents: IncidentService) {
  /** Set while this process is the evaluator: the connection holding the lock (none when embedded). */
  let leader: { client: pg.PoolClient | undefined } | undefined
  let minutes = new Map<number, MinuteAgg>()
  let anomalies = createAnomalySignals()
  let pushedUpTo = 0
  let cursor = '0'
  let lastPrune = 0
  let timer: NodeJS.Timeout | undefined
  let running: Promise<void> | undefined
  let stopped = false

  const db = ctx.db.kysely
  const grace = () => Math.max(2 * ctx.config.alertsInterval, 10_000)

  async function elect(): Promise<boolean> {
    // The embedded database serves one process (its data directory is locked): that process is the
    // evaluator, and must not keep a connection (and PGlite's one session) for the lock.
    if (ctx.db.kind === 'embedded') {
      leader = { client: undefined }
      await load()
      ctx.logger.info('alert evaluator elected (embedded database)')
      return true
    }
    const client = await ctx.db.pool.connect()
    try {
      const r = await client.query<{ ok: boolean }>('select pg_try_advisory_lock($1, $2) as ok', [...LOCK])
      if (!r.rows[0]?.ok) {
        client.release()
        return false
      }
    } catch (err) {
      client.release(err as Error)
      throw err
    }
    // A broken connection loses the lock with it: step down and let the next tick try again.
    client.on('error', () => void stepDown(true))
    leader = { client }
    await load()
    ctx.logger.info('alert evaluator elected')
    return true
  }

  async function stepDown(broken: boolean): Promise<void> {
    const client = leader?.client
    leader = undefined
    if (!client) return
    if (broken) return client.release(true)
    try {
      await client.query('select pg_advisory_unlock($1, $2)', [...LOCK])
      client.release()
    } catch (err) {
      client.release(err as Error)
    }
  }

  /** Reloads the minutes (and replays the anomaly detectors) from `alert_minutes`. */
  async function load() {
    const since = new Date(ctx.now() - KEEP_MINUTES * MINUTE)
    const rows = await db
      .selectFrom('alert_minutes')
      .select(['minute', 'data'])
      .where('minute', '>=', since)
      .orderBy('minute')
      .execute()
    minutes = new Map(
      rows.map((r) => {
        const m = (typeof r.data === 'string' ? JSON.parse(r.data) : r.data) as MinuteAgg
        return [m.t, m]
      }),
    )
    anomalies = createAnomalySignals()
    pushedUpTo = 0
    const closed = [...minutes.keys()].filter((t) => t + MINUTE + grace() <= ctx.now()).sort((a, b) => a - b)
    for (const t of closed.slice(-REPLAY_MINUTES)) anomalies.push(minutes.get(t)!)
    pushedUpTo = closed.at(-1) ?? 0
    // Samples of minutes not stored yet are folded again (the stored ones are complete).
    const storedUpTo = rows.length ? new Date(rows.at(-1)!.minute).getTime() + MINUTE : 0
    const from = await db
      .selectFrom('alert_samples')
      .select((eb) => eb.fn.min('seq').as('seq'))
      .where('at', '>=', new Date(storedUpTo))
      .executeTakeFirst()
    cursor = from?.seq ? String(BigInt(from.seq) - 1n) : '0'
    if (storedUpTo > 0) minutes.delete(storedUpTo - MINUTE)
  }

  async function ingest() {
    const rows = await db
      .selectFrom('alert_samples')
      .select(['seq', 'instance_id', 'at', 'data'])
      .where('seq', '>', cursor)
      .orderBy('seq')
      .limit(5000)
      .execute()
    const touched = new Set<number>()
    for (const r of rows) {
      const t = Math.floor(new Date(r.at).getTime() / MINUTE) * MINUTE
      const m = minutes.get(t) ?? emptyMinute(t)
      minutes.set(t, m)
      foldSample(m, r.instance_id, (typeof r.data === 'string' ? JSON.parse(r.data) : r.data) as Sample)
      touched.add(t)
      cursor = String(r.seq)
    }
    for (const t of touched) {
      const data = JSON.stringify(minutes.get(t))
      await db
        .insertInto('alert_minutes')
        .values({ minute: new Date(t), data })
        .onConflict((oc) => oc.column('minute').doUpdateSet({ data }))
        .execute()
    }
    // Closed minutes go to the anomaly detectors once, in order; a minute without any sample
    // (every process down) is an empty one.
    const now = ctx.now()
    const lastClosed = Math.floor((now - grace()) / MINUTE) * MINUTE - MINUTE
    if (pushedUpTo === 0) pushedUpTo = Math.min(...[...minutes.keys(), lastClosed]) - MINUTE
    for (let t = pushedUpTo + MINUTE; t <= lastClosed; t += MINUTE) {
      anomalies.push(minutes.get(t) ?? emptyMinute(t))
      pushedUpTo = t
    }
    for (const t of minutes.keys()) if (t < now - KEEP_MINUTES * MINUTE) minutes.delete(t)
  }

  async function liveFigures() {
    const metric = ctx.metrics.registry.getSingleMetric('plinth_job_queue_oldest_waiting_seconds')
    const queueOldestSeconds: Record<string, number> = {}
    if (metric)
      for (const v of ((await metric.get()) as { values: { labels: { name?: string }; value: number }[] })
        .values)
        if (v.labels.name) queueOldestSeconds[v.labels.name] = v.value
    return { queueOldestSeconds }
  }

  /** Opens what newly fires, refreshes what still does, resolves what stopped. */
  async function reconcile(firing: readonly Firing[]) {
    const active = await incidents.active()
    const seen = new Set<string>()
    for (const f of firing) {
      const fp = fingerprintOf(f.rule, f.labels)
      if (seen.has(fp)) continue
      seen.add(fp)
      const existing = active.get(fp)
      if (existing) await incidents.touch(existing.id, f.value)
      else await incidents.open(f)
    }
    for (const [fp, i] of active) if (!seen.has(fp)) await incidents.resolve(i.id)
  }

  async function evaluateOnce(): Promise<boolean> {
    if (!leader && !(await elect())) return false
    try {
      await leader?.client?.query('select 1')
    } catch {
      await stepDown(true)
      return false
    }
    await ingest()
    const sorted = [...minutes.values()].sort((a, b) => a.t - b.t)
    const view = new Minutes(sorted, ctx.now())
    const stuffing = detectCredentialStuffing(view.last(10))
    const firing = [
      ...evaluateConditions(view, await liveFigures()),
      ...anomalies.firing(),
      ...(stuffing ? [stuffing] : []),
    ]
    await reconcile(firing)
    await incidents.escalateDue()
    if (ctx.now() - lastPrune > MINUTE) {
      lastPrune = ctx.now()
      await db
        .deleteFrom('alert_samples')
        .where('at', '<', new Date(ctx.now() - KEEP_SAMPLES_MS))
        .execute()
      await db
        .deleteFrom('alert_minutes')
        .where('minute', '<', new Date(ctx.now() - KEEP_MINUTES * MINUTE))
        .execute()
    }
    return true
  }

  const tick = () => {
    if (running || stopped) return
    running = evaluateOnce()
      .then(() => undefined)
      .catch((err: unknown) => ctx.logger.warn({ err }, 'alert evaluation failed'))
      .finally(() => {
        running = undefined
      })
  }

  return {
    /** One evaluation now (tests); false when another process is the evaluator. */
    evaluateOnce,
    get isLeader() {
      return leader !== undefined
    },
    start() {
      timer = setInterval(tick, ctx.config.alertsInterval)
      timer.unref()
    },
    async stop() {
      stopped = true
      if (timer) clearInterval(timer)
      await running
      await stepDown(false)
    },
  }
}
