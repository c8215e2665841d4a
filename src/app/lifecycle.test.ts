import assert from 'node:assert/strict'
import { afterEach, describe, it } from 'node:test'
import pino from 'pino'
import type { Plinth } from './create-plinth.ts'
import { handleProcessSignals, RELAY_REPEAT_MS } from './lifecycle.ts'

/** A Plinth whose shutdown never ends (the signals' accounting is what is under test) and a log. */
function setUp(relayed: boolean) {
  const lines: { msg: string; signal?: string }[] = []
  const logger = pino({ level: 'info' }, { write: (line: string) => lines.push(JSON.parse(line)) })
  let shutdowns = 0
  const plinth = {
    shutdown: () => {
      shutdowns++
      return new Promise<void>(() => {})
    },
  } as unknown as Plinth
  const exits: number[] = []
  let clock = 1000
  const remove = handleProcessSignals(plinth, {
    logger,
    relayed,
    exit: (code) => exits.push(code),
    now: () => clock,
  })
  return {
    lines,
    exits,
    remove,
    shutdowns: () => shutdowns,
    advance: (ms: number) => (clock += ms),
    // The listeners, without a real signal: process.emit runs exactly what a signal would.
    signal: (name: NodeJS.Signals) => process.emit(name, name),
  }
}

describe('process signals', () => {
  let remove: (() => void) | undefined
  afterEach(() => remove?.())

  it('a second signal forces the exit, however soon it follows', () => {
    const s = setUp(false)
    remove = s.remove
    s.signal('SIGTERM')
    s.signal('SIGTERM')
    assert.equal(s.shutdowns(), 1)
    assert.deepEqual(s.exits, [1])
    assert.deepEqual(
      s.lines.map((l) => l.msg),
      ['signal received, shutting down', 'second signal, forcing exit'],
    )
  })

  it('relayed: the same signal again within the window is one signal; later, or another signal, is a second', () => {
    const s = setUp(true)
    remove = s.remove
    s.signal('SIGINT')
    s.advance(1)
    s.signal('SIGINT') // the relayed copy
    assert.deepEqual(s.exits, [])
    assert.equal(s.shutdowns(), 1)
    s.advance(RELAY_REPEAT_MS)
    s.signal('SIGINT') // a person's second Ctrl-C
    assert.deepEqual(s.exits, [1])

    const t = setUp(true)
    s.remove()
    remove = t.remove
    t.signal('SIGTERM')
    t.signal('SIGINT')
    assert.deepEqual(t.exits, [1])
    assert.equal(t.lines.filter((l) => l.msg === 'signal received, shutting down').length, 1)
  })
})
