/** How every benchmark prints its figures: numbers, the per-round line and the result table. */
import { round, type Sample } from './load.ts'

export const num = (value: number) => value.toLocaleString('en-US', { maximumFractionDigits: 2 })

/** One table row: the first cell left-aligned, the figures right-aligned in fixed columns. */
export function row(cells: readonly (string | number)[]): string {
  const widths = [8, 12, 9, 9, 8, 8]
  return cells
    .map((c, i) => (i === 0 ? String(c).padEnd(widths[i]!) : String(c).padStart(widths[i]!)))
    .join('  ')
}

/** The table's heading line (preceded by a blank line), `first` naming the first column. */
export function header(first: string, rounds: number): string {
  const figures = rounds === 1 ? 'one run each' : `median of ${rounds} runs each`
  return `\n${row([first, 'requests/s', 'p50 ms', 'p99 ms', 'errors', 'non-2xx'])}   (${figures})`
}

/** The table row of one aggregated sample. */
export function sampleRow(name: string, s: Sample): string {
  return row([name, num(s.rps), num(s.p50Ms), num(s.p99Ms), s.errors, s.non2xx])
}

/** The line printed after each measured run. */
export function roundLine(r: number, rounds: number, kind: string, sample: Sample): string {
  return (
    `round ${r}/${rounds} ${kind.padEnd(6)}  ${num(Math.round(sample.rps))} req/s  ` +
    `p50 ${num(round(sample.p50Ms, 2))} ms  p99 ${num(round(sample.p99Ms, 2))} ms  ` +
    `errors ${sample.errors}  non-2xx ${sample.non2xx}  load generator ${sample.clientCpu.toFixed(2)} core`
  )
}
