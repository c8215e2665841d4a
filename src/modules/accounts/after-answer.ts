import type { Logger } from 'pino'

/**
 * Work started after the answer: nothing of it can show in the response or its timing (the
 * password-reset request answers before it even looks the address up). Each task starts on a later
 * turn of the event loop, failures are logged, and `drain()` waits for what is still running (the
 * module calls it when the server closes, before the database goes).
 */
export function createAfterAnswer(logger: Logger) {
  const pending = new Set<Promise<void>>()
  return {
    run(what: string, task: () => Promise<void>): void {
      const running: Promise<void> = new Promise<void>((resolve) => setImmediate(resolve))
        .then(task)
        .catch((err: unknown) => logger.error({ err, task: what }, 'background work failed'))
        .finally(() => pending.delete(running))
      pending.add(running)
    },
    async drain(): Promise<void> {
      while (pending.size > 0) await Promise.allSettled([...pending])
    },
  }
}

export type AfterAnswer = ReturnType<typeof createAfterAnswer>
