import { AnomalyDetector, DETECTORS } from './anomaly.ts'
import type { Firing } from './conditions.ts'
import { type MinuteAgg, quantile } from './minutes.ts'

type Signal = keyof typeof DETECTORS

/** Routes with a detector of their own, at most (the busiest come first). */
const MAX_ROUTES = 50
/** A route gets detectors once it answered this many requests in a minute. */
const ROUTE_MIN_REQUESTS = 10

const LABEL: Record<Signal, string> = {
  requestRate: 'request rate',
  errorRate: '5xx ratio',
  latency: 'p99 latency',
  loginFailures: 'failed sign-ins',
}

function figures(m: MinuteAgg, route?: string) {
  const rs = route ? [m.http[route]].filter((r) => r !== undefined) : Object.values(m.http)
  let n = 0
  let e5 = 0
  const b: number[] = []
  for (const r of rs) {
    n += r.n
    e5 += r.e5
    r.b.forEach((c, i) => {
      b[i] = (b[i] ?? 0) + c
    })
  }
  return { n, errorRate: n > 0 ? e5 / n : 0, p99: quantile(0.99, b) }
}

/**
 * The anomaly detectors of decision 0024 over the minute aggregates: request rate, 5xx ratio and
 * p99 latency overall and per route, and failed sign-ins overall. Feed each closed minute once,
 * in order (`push`); `firing()` says which detectors fire now.
 */
export function createAnomalySignals() {
  const detectors = new Map<string, { signal: Signal; route?: string; d: AnomalyDetector; last: number }>()
  const get = (signal: Signal, route?: string) => {
    const key = `${signal}|${route ?? ''}`
    let e = detectors.get(key)
    if (!e) {
      e = { signal, ...(route ? { route } : {}), d: new AnomalyDetector(DETECTORS[signal]), last: 0 }
      detectors.set(key, e)
    }
    return e
  }
  const feed = (signal: Signal, value: number | null, route?: string) => {
    if (value === null) return
    const e = get(signal, route)
    e.d.push(value)
    e.last = value
  }
  let routes = 0
  return {
    push(m: MinuteAgg) {
      const all = figures(m)
      feed('requestRate', all.n)
      // A ratio of a handful of requests is noise: no verdict on minutes without traffic.
      feed('errorRate', all.n >= 20 ? all.errorRate : null)
      feed('latency', all.n >= 20 ? all.p99 : null)
      feed('loginFailures', m.login.failures)
      const known = new Set([...detectors.values()].flatMap((e) => (e.route ? [e.route] : [])))
      for (const route of Object.keys(m.http)) {
        const r = figures(m, route)
        if (!known.has(route)) {
          if (r.n < ROUTE_MIN_REQUESTS || routes >= MAX_ROUTES) continue
          routes++
        }
        feed('requestRate', r.n, route)
        feed('errorRate', r.n >= 20 ? r.errorRate : null, route)
        feed('latency', r.n >= 20 ? r.p99 : null, route)
      }
      // A known route with no request this minute had a rate of 0.
      for (const route of known) if (!m.http[route]) feed('requestRate', 0, route)
    },
    firing(): Firing[] {
      const out: Firing[] = []
      for (const e of detectors.values()) {
        if (!e.d.isFiring) continue
        const where = e.route ? ` of ${e.route}` : ''
        out.push({
          rule: `anomaly-${e.signal.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`,
          kind: e.signal === 'loginFailures' ? 'security' : 'anomaly',
          severity: 'ticket',
          summary: `Unusual ${LABEL[e.signal]}${where}`,
          description: `The ${LABEL[e.signal]}${where} (${e.last.toFixed(3)} in the last minute) left its usual band (robust z-score over the last hour beyond ${DETECTORS[e.signal].threshold}) for ${DETECTORS[e.signal].sustain} minutes or more.`,
          labels: e.route ? { route: e.route } : {},
          value: e.last,
        })
      }
      return out
    },
  }
}
