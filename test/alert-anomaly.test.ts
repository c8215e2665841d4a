import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { generateSeries, meanStdDetector, score } from '../bench/anomaly/series.ts'
import { AnomalyDetector, DETECTORS, robustBand } from '../src/modules/alerts/anomaly.ts'

// Decision 0024's figures, held as minimums on the deterministic series of bench/anomaly
// (`node bench/anomaly/run.ts` prints them in full). A week per series keeps the test short.

describe('anomaly detection (robust z-score on a rolling window)', () => {
  it('finds injected anomalies with high precision and recall at 300 requests a minute', () => {
    const s = score(generateSeries({ seed: 24, days: 7, anomalies: true }))
    assert.ok(s.anomalies >= 15, `${s.anomalies} anomalies`)
    assert.ok(s.precision >= 0.95, `precision ${s.precision}`)
    assert.ok(s.recall >= 0.9, `recall ${s.recall}`)
    assert.ok(s.medianDelayMinutes <= 6, `delay ${s.medianDelayMinutes}`)
  })

  it('raises at most one false alarm per simulated week on a quiet series with daily and weekly cycles', () => {
    for (const baseRate of [30, 300, 3000]) {
      const q = score(generateSeries({ seed: 25, days: 7, anomalies: false, baseRate }))
      assert.ok(
        q.falseAlarmsPerDay <= 1 / 7 + 1e-9,
        `${baseRate}/min: ${q.falseAlarmsPerDay} false alarms a day`,
      )
    }
  })

  it('beats the mean/standard-deviation baseline on recall', () => {
    const series = generateSeries({ seed: 24, days: 7, anomalies: true })
    assert.ok(score(series).recall > score(series, meanStdDetector).recall + 0.5)
  })

  it('fires only after `sustain` values out of band, and clears after `clear` values back in', () => {
    const d = new AnomalyDetector({ ...DETECTORS.requestRate, minHistory: 10, window: 20 })
    for (let i = 0; i < 20; i++) d.push(100 + (i % 3))
    const verdicts = [500, 500, 500, 500, 500, 101, 100, 100].map((v) => d.push(v))
    assert.deepEqual(
      verdicts.map((v) => v.firing),
      [false, false, false, false, true, true, true, false],
    )
    assert.equal(verdicts.filter((v) => v.started).length, 1)
  })

  it('keeps a floor under the scale of a flat series (MAD 0)', () => {
    assert.equal(robustBand([5, 5, 5, 5], { minScale: 3, relativeFloor: 0.1 }).scale, 3)
    assert.equal(robustBand([1000, 1000, 1000], { minScale: 3, relativeFloor: 0.1 }).scale, 100)
  })
})
