import { setTimeout as sleep } from 'node:timers/promises'

export interface RetryOptions {
  /** Give up once this many milliseconds have passed since the first attempt. */
  readonly deadlineMs: number
  /** First delay; doubles (by `factor`) after each failure up to `maxDelayMs`. Default 200 ms. */
  readonly initialDelayMs?: number
  /** Default 10 s. */
  readonly maxDelayMs?: number
  /** Default 2. */
  readonly factor?: number
  readonly signal?: AbortSignal
  /** Called before each wait, so callers can log the retry. */
  readonly onRetry?: (info: { attempt: number; delayMs: number; error: unknown }) => void
  /** Injectable for tests; defaults to Math.random. */
  readonly random?: () => number
}

/** Thrown when the deadline passes; `cause` is the last failure, `attempts` how many were made. */
export class RetryDeadlineError extends Error {
  readonly attempts: number
  constructor(attempts: number, elapsedMs: number, cause: unknown) {
    super(`gave up after ${attempts} attempts in ${Math.round(elapsedMs)} ms`, { cause })
    this.name = 'RetryDeadlineError'
    this.attempts = attempts
  }
}

/**
 * The delay before retry number `attempt` (1-based): exponential growth capped at `maxDelayMs`,
 * with "equal jitter" (half fixed, half random) so that many replicas restarting together do not
 * hammer a recovering server in lockstep, yet never retry with almost no pause.
 */
export function backoffDelay(attempt: number, options: Omit<RetryOptions, 'deadlineMs'> = {}): number {
  const { initialDelayMs = 200, maxDelayMs = 10_000, factor = 2, random = Math.random } = options
  const cap = Math.min(maxDelayMs, initialDelayMs * factor ** (attempt - 1))
  return cap / 2 + random() * (cap / 2)
}

/**
 * Runs `fn` until it resolves, waiting with exponential backoff and jitter between failures.
 *
 * @example
 * await retryWithBackoff(() => pool.query('select 1'), { deadlineMs: 60_000, onRetry: log })
 */
export async function retryWithBackoff<T>(
  fn: (attempt: number) => Promise<T>,
  options: RetryOptions,
): Promise<T> {
  const started = performance.now()
  for (let attempt = 1; ; attempt++) {
    options.signal?.throwIfAborted()
    try {
      return await fn(attempt)
    } catch (error) {
      const elapsed = performance.now() - started
      const remaining = options.deadlineMs - elapsed
      if (remaining <= 0) throw new RetryDeadlineError(attempt, elapsed, error)
      const delayMs = Math.min(remaining, backoffDelay(attempt, options))
      options.onRetry?.({ attempt, delayMs: Math.round(delayMs), error })
      await sleep(delayMs, undefined, { signal: options.signal })
    }
  }
}
