import assert from 'node:assert/strict'
import type { EventEmitter } from 'node:events'
import { describe, it } from 'node:test'
import { RELAYED_SIGNAL_EVENT } from '../src/app/lifecycle.ts'
import { abortOnInterrupt } from '../src/cli/keys.ts'

// The listeners, without a real signal: process.emit runs what a signal (or bin/plinth.js, for a
// relayed one) would, and says whether anything listened.
const emit = (event: string) => (process as EventEmitter).emit(event, 'SIGINT')

describe('plinth keys rotate, interrupted', () => {
  it('Ctrl-C through an older Node (direct and relayed, in either order) aborts once and ends nothing', () => {
    for (const [first, second] of [
      ['SIGINT', RELAYED_SIGNAL_EVENT],
      [RELAYED_SIGNAL_EVENT, 'SIGINT'],
    ] as const) {
      const abort = new AbortController()
      const stop = abortOnInterrupt(abort)
      try {
        assert.equal(emit(first), true)
        assert.equal(abort.signal.aborted, true)
        // The other copy is taken too: bin/plinth.js does not raise a relayed one again, and a
        // direct one does not reach the default action, which would end the command before its report.
        assert.equal(emit(second), true, `${second} was left to the default action`)
      } finally {
        stop()
      }
    }
  })

  it('a supervisor SIGTERM relayed alone aborts, and the remover leaves no listener behind', () => {
    const before = ['SIGINT', 'SIGTERM', RELAYED_SIGNAL_EVENT].map((e) => process.listenerCount(e))
    const abort = new AbortController()
    const stop = abortOnInterrupt(abort)
    assert.equal((process as EventEmitter).emit(RELAYED_SIGNAL_EVENT, 'SIGTERM'), true)
    assert.equal(abort.signal.aborted, true)
    stop()
    assert.deepEqual(
      ['SIGINT', 'SIGTERM', RELAYED_SIGNAL_EVENT].map((e) => process.listenerCount(e)),
      before,
    )
  })
})
