import { setTimeout as sleep } from 'node:timers/promises'

/**
 * Polls `probe` until it returns something other than undefined/false, or fails after `timeoutMs`
 * naming `what`. Use it instead of a fixed sleep: a loaded machine gets the whole deadline, an idle
 * one goes on as soon as the condition holds.
 *
 * @example
 * const row = await waitFor('the delivery row', () => findDelivery(id), { timeoutMs: 30_000 })
 */
export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined | false> | T | undefined | false,
  { timeoutMs = 10_000, intervalMs = 50 } = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await probe()
    if (value !== undefined && value !== false) return value
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await sleep(intervalMs)
  }
}

/**
 * Asserts that `probe` keeps holding (returns true) for `forMs`, checking every `intervalMs`: for
 * "nothing happens" claims, where no event marks the end of the wait. Fails at the first false.
 */
export async function holdsFor(
  what: string,
  probe: () => Promise<boolean> | boolean,
  { forMs, intervalMs = 50 }: { forMs: number; intervalMs?: number },
): Promise<void> {
  const until = Date.now() + forMs
  do {
    if (!(await probe())) throw new Error(`stopped holding: ${what}`)
    await sleep(intervalMs)
  } while (Date.now() < until)
  if (!(await probe())) throw new Error(`stopped holding: ${what}`)
}
