/**
 * The command line every benchmark shares: `--duration <s>` (or BENCH_DURATION), `--rounds <n>` and
 * `--help`, as bounded whole numbers. A bad value throws a UsageError (exit 2, see children.ts).
 */
import { parseArgs } from 'node:util'

export interface Range {
  readonly default: number
  readonly min: number
  readonly max: number
}

export const DURATION: Range = { default: 10, min: 1, max: 60 }
export const ROUNDS: Range = { default: 3, min: 1, max: 9 }

export class UsageError extends Error {}

/** A usage error of ours or one of `parseArgs` (unknown option, missing value). */
export function isUsageError(err: unknown): boolean {
  return err instanceof UsageError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS') === true
}

export function boundedInt(name: string, raw: string | undefined, range: Range): number {
  if (raw === undefined || raw === '') return range.default
  const value = Number(raw)
  if (!Number.isInteger(value) || value < range.min || value > range.max) {
    throw new UsageError(`${name} must be a whole number from ${range.min} to ${range.max}, got "${raw}"`)
  }
  return value
}

/** Parses the shared options; `--help` prints `usage` and exits 0. */
export function parseOptions(argv: readonly string[], usage: string): { duration: number; rounds: number } {
  const { values } = parseArgs({
    args: [...argv],
    options: { duration: { type: 'string' }, rounds: { type: 'string' }, help: { type: 'boolean' } },
  })
  if (values.help) {
    console.log(usage)
    process.exit(0)
  }
  return {
    duration: boundedInt('--duration', values.duration ?? process.env.BENCH_DURATION, DURATION),
    rounds: boundedInt('--rounds', values.rounds, ROUNDS),
  }
}
