import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { backoffDelay, RetryDeadlineError, retryWithBackoff } from './retry.ts'

describe('backoffDelay', () => {
  it('doubles up to the cap, with half of each delay random', () => {
    const low = (a: number) => backoffDelay(a, { initialDelayMs: 100, maxDelayMs: 1000, random: () => 0 })
    const high = (a: number) => backoffDelay(a, { initialDelayMs: 100, maxDelayMs: 1000, random: () => 1 })
    assert.deepEqual([1, 2, 3, 4, 5, 6].map(low), [50, 100, 200, 400, 500, 500])
    assert.deepEqual([1, 2, 3, 4, 5, 6].map(high), [100, 200, 400, 800, 1000, 1000])
  })
})

describe('retryWithBackoff', () => {
  it('retries until the operation succeeds, reporting each retry', async () => {
    const retries: number[] = []
    let calls = 0
    const result = await retryWithBackoff(
      async () => {
        calls++
        if (calls < 3) throw new Error(`fail ${calls}`)
        return 'done'
      },
      { deadlineMs: 5000, initialDelayMs: 5, onRetry: ({ attempt }) => retries.push(attempt) },
    )
    assert.equal(result, 'done')
    assert.equal(calls, 3)
    assert.deepEqual(retries, [1, 2])
  })

  it('gives up after the deadline with the last error as cause', async () => {
    const started = performance.now()
    await assert.rejects(
      retryWithBackoff(
        async (attempt) => {
          throw new Error(`attempt ${attempt}`)
        },
        { deadlineMs: 120, initialDelayMs: 20, maxDelayMs: 40 },
      ),
      (err: unknown) => {
        assert.ok(err instanceof RetryDeadlineError)
        assert.ok(err.attempts >= 2, `attempts: ${err.attempts}`)
        assert.match((err.cause as Error).message, new RegExp(`attempt ${err.attempts}`))
        return true
      },
    )
    assert.ok(performance.now() - started < 1000, 'never waits far past the deadline')
  })

  it('stops when its signal aborts', async () => {
    const controller = new AbortController()
    setTimeout(() => controller.abort(new Error('stopping')), 30)
    await assert.rejects(
      retryWithBackoff(
        async () => {
          throw new Error('down')
        },
        { deadlineMs: 60_000, initialDelayMs: 10_000, signal: controller.signal },
      ),
      /aborted|stopping/,
    )
  })
})
