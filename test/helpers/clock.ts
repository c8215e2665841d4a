/**
 * A clock a test moves forward instead of sleeping: real time plus an offset. Give `now` to
 * `startTestPlinth({ now })` (it becomes `ctx.now`, what the accounts services measure time with),
 * then `advance(ms)` to let a lock, a session or a token run out at once.
 *
 * @example
 * const clock = movableClock()
 * const plinth = await startTestPlinth({ now: clock.now })
 * clock.advance(2000) // the 1 s lock has passed
 */
export function movableClock(): { now: () => number; advance(ms: number): void } {
  let offset = 0
  return {
    now: () => Date.now() + offset,
    advance(ms: number) {
      offset += ms
    },
  }
}
