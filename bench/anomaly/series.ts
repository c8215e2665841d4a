/**
 * Synthetic per-minute series for the anomaly detectors (decision 0024), from a seed: request rate
 * with a daily and a weekly cycle, error ratio, p99 latency and failed sign-ins, with Poisson and
 * log-normal noise; anomalies of known start and length are injected, one signal each. Scoring
 * replays every minute through the detectors and counts which anomalies they caught (recall) and
 * how many of their alarms were real (precision).
 */
import { AnomalyDetector, DETECTORS, type DetectorOptions } from '../../src/modules/alerts/anomaly.ts'

export type Signal = 'requestRate' | 'errorRate' | 'latency' | 'loginFailures'
export const SIGNALS: readonly Signal[] = ['requestRate', 'errorRate', 'latency', 'loginFailures']

export interface Anomaly {
  readonly signal: Signal
  readonly kind: string
  readonly start: number
  readonly end: number
}

export interface Series {
  readonly minutes: number
  readonly values: Record<Signal, number[]>
  readonly anomalies: readonly Anomaly[]
}

/** mulberry32: a small seeded PRNG, so that every run replays the same series. */
export function prng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

function gauss(rand: () => number): number {
  const u = Math.max(rand(), 1e-12)
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rand())
}

function poisson(rand: () => number, lambda: number): number {
  if (lambda < 30) {
    const l = Math.exp(-lambda)
    let k = 0
    let p = 1
    do {
      k++
      p *= rand()
    } while (p > l)
    return k - 1
  }
  return Math.max(0, Math.round(lambda + Math.sqrt(lambda) * gauss(rand)))
}

/** Traffic shape: quiet at night (UTC 03:00), busy mid-afternoon, weekends at 60 %. */
function load(minute: number): number {
  const day = (minute % 1440) / 1440
  const daily = 1 + 0.7 * Math.sin(2 * Math.PI * (day - 0.375))
  const weekday = Math.floor(minute / 1440) % 7
  return daily * (weekday >= 5 ? 0.6 : 1)
}

export interface SeriesOptions {
  readonly seed: number
  readonly days: number
  /** Requests per minute at the daily mean. */
  readonly baseRate?: number
  /** Inject anomalies (about one every `every` minutes); none for a quiet series. */
  readonly anomalies?: boolean
  readonly every?: number
}

const KINDS: readonly { signal: Signal; kind: string }[] = [
  { signal: 'requestRate', kind: 'traffic spike ×3' },
  { signal: 'requestRate', kind: 'traffic drop to 20 %' },
  { signal: 'errorRate', kind: '5xx burst (5 %)' },
  { signal: 'latency', kind: 'latency ×3' },
  { signal: 'loginFailures', kind: 'failed sign-ins +40/min' },
]

export function generateSeries(opts: SeriesOptions): Series {
  const rand = prng(opts.seed)
  const minutes = opts.days * 1440
  const base = opts.baseRate ?? 300
  const anomalies: Anomaly[] = []
  if (opts.anomalies) {
    const every = opts.every ?? 480
    // Start after 2 h (the detectors' warm-up), one anomaly per `every` minutes at a random offset.
    for (let slot = 120; slot + every <= minutes; slot += every) {
      const { signal, kind } = KINDS[Math.floor(rand() * KINDS.length)]!
      const length = 15 + Math.floor(rand() * 46)
      const start = slot + Math.floor(rand() * (every - length - 60))
      anomalies.push({ signal, kind, start, end: start + length })
    }
  }
  const active = (m: number, kind: string) =>
    anomalies.some((a) => a.kind === kind && m >= a.start && m < a.end)
  const values: Record<Signal, number[]> = { requestRate: [], errorRate: [], latency: [], loginFailures: [] }
  for (let m = 0; m < minutes; m++) {
    const l = load(m)
    let lambda = base * l
    if (active(m, 'traffic spike ×3')) lambda *= 3
    if (active(m, 'traffic drop to 20 %')) lambda *= 0.2
    const requests = poisson(rand, lambda)
    const p = active(m, '5xx burst (5 %)') ? 0.05 : 0.002
    const errors = poisson(rand, requests * p)
    const latency = 0.12 * (1 + 0.3 * l) * Math.exp(0.1 * gauss(rand)) * (active(m, 'latency ×3') ? 3 : 1)
    const failures = poisson(rand, 2 * l) + (active(m, 'failed sign-ins +40/min') ? poisson(rand, 40) : 0)
    values.requestRate.push(requests)
    values.errorRate.push(requests > 0 ? Math.min(1, errors / requests) : 0)
    values.latency.push(latency)
    values.loginFailures.push(failures)
  }
  return { minutes, values, anomalies }
}

/** A detector over a series; the default is Plinth's (robust z-score on a rolling window). */
export interface Detector {
  push(value: number): { started: boolean }
}
export type DetectorFactory = (options: DetectorOptions) => Detector

export const robustDetector: DetectorFactory = (o) => new AnomalyDetector(o)

/**
 * The baseline the robust one is compared with: the classic z-score against the mean and standard
 * deviation of the same rolling window (same threshold, sustain and floors).
 */
export const meanStdDetector: DetectorFactory = (o) => {
  const history: number[] = []
  let out = 0
  let inBand = 0
  let firing = false
  return {
    push(value) {
      let outOfBand = false
      if (history.length >= o.minHistory) {
        const mean = history.reduce((s, v) => s + v, 0) / history.length
        const sd = Math.sqrt(history.reduce((s, v) => s + (v - mean) ** 2, 0) / history.length)
        const scale = Math.max(sd, o.minScale, o.relativeFloor * Math.abs(mean))
        const z = (value - mean) / scale
        outOfBand = o.direction === 'up' ? z > o.threshold : Math.abs(z) > o.threshold
      }
      let started = false
      if (outOfBand) {
        out++
        inBand = 0
        if (!firing && out >= o.sustain) started = firing = true
      } else {
        inBand++
        out = 0
        if (firing && inBand >= o.clear) firing = false
      }
      history.push(value)
      if (history.length > o.window) history.shift()
      return { started }
    },
  }
}

export interface Score {
  readonly alarms: number
  readonly truePositives: number
  readonly falsePositives: number
  readonly anomalies: number
  readonly detected: number
  readonly precision: number
  readonly recall: number
  readonly falseAlarmsPerDay: number
  /** Median minutes from an anomaly's start to its alarm. */
  readonly medianDelayMinutes: number
}

/** Replays the series through one detector per signal and scores the alarms against the anomalies. */
export function score(series: Series, factory: DetectorFactory = robustDetector): Score {
  let alarms = 0
  let truePositives = 0
  const detected = new Set<Anomaly>()
  const delays: number[] = []
  for (const signal of SIGNALS) {
    const detector = factory(DETECTORS[signal])
    const values = series.values[signal]
    for (let m = 0; m < values.length; m++) {
      if (!detector.push(values[m]!).started) continue
      alarms++
      // An alarm counts when it starts within an anomaly of its signal, or up to `sustain` minutes
      // after it (the time the detector needs to be sure).
      const hit = series.anomalies.find(
        (a) => a.signal === signal && m >= a.start && m <= a.end + DETECTORS[signal].sustain,
      )
      if (hit) {
        truePositives++
        if (!detected.has(hit)) delays.push(m - hit.start)
        detected.add(hit)
      }
    }
  }
  const falsePositives = alarms - truePositives
  delays.sort((a, b) => a - b)
  return {
    alarms,
    truePositives,
    falsePositives,
    anomalies: series.anomalies.length,
    detected: detected.size,
    precision: alarms ? truePositives / alarms : 1,
    recall: series.anomalies.length ? detected.size / series.anomalies.length : 1,
    falseAlarmsPerDay: falsePositives / (series.minutes / 1440),
    medianDelayMinutes: delays.length ? delays[delays.length >> 1]! : 0,
  }
}
