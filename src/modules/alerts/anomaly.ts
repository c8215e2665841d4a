/**
 * Anomaly detection on per-minute series (decision 0024): a robust z-score of each new value
 * against the median and MAD of a rolling window of the values before it. A value is out of band
 * when |z| exceeds `threshold` (in the configured direction); a detector fires once `sustain`
 * consecutive values are out of band and clears after `clear` consecutive values back in band.
 *
 * The scale is `max(1.4826·MAD, minScale, relativeFloor·|median|)`: MAD is 0 on quiet series (many
 * identical counts), and the relative floor keeps the band from being narrower than the drift of a
 * daily cycle within the window.
 */
export interface DetectorOptions {
  /** Values (minutes) of history the band is computed from. */
  readonly window: number
  /** No verdict before this many values of history. */
  readonly minHistory: number
  /** Robust z beyond which a value is out of band. */
  readonly threshold: number
  /** Consecutive out-of-band values before firing. */
  readonly sustain: number
  /** Consecutive in-band values before a firing detector clears. */
  readonly clear: number
  /** Smallest scale, in the series' unit (a few requests, 50 ms…). */
  readonly minScale: number
  /** Smallest scale as a fraction of the median. */
  readonly relativeFloor: number
  /** `up`: only rises are anomalies (errors, latency, failed sign-ins); `both`: drops too (traffic). */
  readonly direction: 'up' | 'both'
}

export interface Verdict {
  /** The value's robust z-score (0 until there is enough history). */
  readonly z: number
  readonly median: number
  readonly scale: number
  readonly outOfBand: boolean
  /** The detector's state after this value. */
  readonly firing: boolean
  /** True on the value that made it fire. */
  readonly started: boolean
}

export function median(sorted: readonly number[]): number {
  const n = sorted.length
  if (n === 0) return 0
  const mid = n >> 1
  return n % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

/** The median and the robust scale of a window of values. */
export function robustBand(
  values: readonly number[],
  opts: Pick<DetectorOptions, 'minScale' | 'relativeFloor'>,
) {
  const sorted = [...values].sort((a, b) => a - b)
  const med = median(sorted)
  const deviations = sorted.map((v) => Math.abs(v - med)).sort((a, b) => a - b)
  const mad = median(deviations)
  const scale = Math.max(1.4826 * mad, opts.minScale, opts.relativeFloor * Math.abs(med))
  return { median: med, scale }
}

/** One series' detector. Its state (history, streaks) is plain data: `snapshot()`/`restore()`. */
export class AnomalyDetector {
  readonly options: DetectorOptions
  private history: number[] = []
  private outStreak = 0
  private inStreak = 0
  private firing = false

  constructor(options: DetectorOptions) {
    this.options = options
  }

  get isFiring(): boolean {
    return this.firing
  }

  push(value: number): Verdict {
    const o = this.options
    let z = 0
    let med = 0
    let scale = 0
    let outOfBand = false
    if (this.history.length >= o.minHistory) {
      const band = robustBand(this.history, o)
      med = band.median
      scale = band.scale
      z = (value - med) / scale
      outOfBand = o.direction === 'up' ? z > o.threshold : Math.abs(z) > o.threshold
    }
    let started = false
    if (outOfBand) {
      this.outStreak++
      this.inStreak = 0
      if (!this.firing && this.outStreak >= o.sustain) {
        this.firing = true
        started = true
      }
    } else {
      this.inStreak++
      this.outStreak = 0
      if (this.firing && this.inStreak >= o.clear) this.firing = false
    }
    this.history.push(value)
    if (this.history.length > o.window) this.history.shift()
    return { z, median: med, scale, outOfBand, firing: this.firing, started }
  }
}

/** The detectors of decision 0024, per signal (values per minute). */
export const DETECTORS = {
  /** Requests answered per minute. */
  requestRate: {
    window: 60,
    minHistory: 30,
    threshold: 4.5,
    sustain: 5,
    clear: 3,
    minScale: 5,
    relativeFloor: 0.1,
    direction: 'both',
  },
  /** Share of 5xx answers in the minute (0..1). */
  errorRate: {
    window: 60,
    minHistory: 30,
    threshold: 4.5,
    sustain: 3,
    clear: 3,
    minScale: 0.01,
    relativeFloor: 0.1,
    direction: 'up',
  },
  /** p99 latency of the minute, in seconds. */
  latency: {
    window: 60,
    minHistory: 30,
    threshold: 4.5,
    sustain: 5,
    clear: 3,
    minScale: 0.05,
    relativeFloor: 0.1,
    direction: 'up',
  },
  /** Failed sign-ins per minute. */
  loginFailures: {
    window: 60,
    minHistory: 30,
    threshold: 4.5,
    sustain: 3,
    clear: 3,
    minScale: 3,
    relativeFloor: 0.1,
    direction: 'up',
  },
} as const satisfies Record<string, DetectorOptions>
