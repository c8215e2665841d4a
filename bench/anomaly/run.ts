/**
 * Precision, recall and false alarms of the anomaly detectors (decision 0024) on synthetic series
 * replayed minute by minute (bench/anomaly/series.ts), beside the baseline of a plain mean/standard
 * deviation z-score on the same window. Deterministic: `--seed N` (default 24), `--days N`
 * (default 28). Other arguments (`--duration` from `npm run bench`) are ignored: nothing is timed.
 */
import { parseArgs } from 'node:util'
import { generateSeries, meanStdDetector, robustDetector, type Score, score } from './series.ts'

const { values: args } = parseArgs({
  options: { seed: { type: 'string', default: '24' }, days: { type: 'string', default: '28' } },
  strict: false,
})
const seed = Number(args.seed)
const days = Number(args.days)

const row = (name: string, s: Score, q: Score) =>
  `${name.padEnd(34)} ${s.precision.toFixed(3).padStart(9)} ${s.recall.toFixed(3).padStart(7)} ${`${s.detected}/${s.anomalies}`.padStart(8)} ${String(s.medianDelayMinutes).padStart(10)} ${q.falseAlarmsPerDay.toFixed(3).padStart(16)}`

const summary: Record<string, unknown> = { bench: 'anomaly', seed, days }
console.log(
  `anomaly detection: ${days} simulated days per series, seed ${seed}; anomalies injected one per 8 h on one of 4 signals (request rate, 5xx ratio, p99 latency, failed sign-ins); quiet series without any`,
)
console.log(`${'detector @ traffic'.padEnd(34)} precision  recall detected delay(min) quiet alarms/day`)
for (const baseRate of [30, 300, 3000]) {
  const withAnomalies = generateSeries({ seed, days, anomalies: true, baseRate })
  const quiet = generateSeries({ seed: seed + 1, days, anomalies: false, baseRate })
  const robust = score(withAnomalies, robustDetector)
  const robustQuiet = score(quiet, robustDetector)
  const naive = score(withAnomalies, meanStdDetector)
  const naiveQuiet = score(quiet, meanStdDetector)
  console.log(row(`robust z (median/MAD) @ ${baseRate}/min`, robust, robustQuiet))
  console.log(row(`baseline z (mean/sd) @ ${baseRate}/min`, naive, naiveQuiet))
  summary[`rate${baseRate}`] = {
    robust: {
      precision: robust.precision,
      recall: robust.recall,
      falseAlarmsPerDay: robustQuiet.falseAlarmsPerDay,
    },
    baseline: {
      precision: naive.precision,
      recall: naive.recall,
      falseAlarmsPerDay: naiveQuiet.falseAlarmsPerDay,
    },
  }
}
console.log(JSON.stringify(summary))
