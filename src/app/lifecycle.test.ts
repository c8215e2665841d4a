import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { afterEach, describe, it } from 'node:test'
import pino from 'pino'
import type { Plinth } from './create-plinth.ts'
import { handleProcessSignals, RELAYED_SIGNAL_EVENT } from './lifecycle.ts'

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
  const remove = handleProcessSignals(plinth, {
    logger,
    relayed,
    exit: (code) => exits.push(code),
  })
  return {
    lines,
    exits,
    remove,
    shutdowns: () => shutdowns,
    // The listeners, without a real signal: process.emit runs exactly what a signal would.
    signal: (name: NodeJS.Signals) => process.emit(name, name),
    // What bin/plinth.js does with a signal relayed over the IPC channel.
    relay: (name: NodeJS.Signals) => (process as NodeJS.EventEmitter).emit(RELAYED_SIGNAL_EVENT, name),
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

  it('relayed: a copy of a signal that also came directly is one signal, in either order and however late', () => {
    const s = setUp(true)
    remove = s.remove
    s.signal('SIGINT') // Ctrl-C, directly
    s.relay('SIGINT') // and its relayed copy
    assert.deepEqual(s.exits, [])
    assert.equal(s.shutdowns(), 1)
    s.relay('SIGINT') // a person's second Ctrl-C: relayed first this time
    assert.deepEqual(s.exits, [1])
    s.signal('SIGINT') // its direct copy counts for nothing more
    assert.deepEqual(s.exits, [1])
    assert.equal(s.lines.filter((l) => l.msg === 'second signal, forcing exit').length, 1)

    const t = setUp(true)
    s.remove()
    remove = t.remove
    t.relay('SIGTERM') // a supervisor's SIGTERM to the outer process alone
    assert.equal(t.shutdowns(), 1)
    t.relay('SIGTERM') // and a second one
    assert.deepEqual(t.exits, [1])
  })

  it('not relayed: a relayed-signal event is ignored', () => {
    const s = setUp(false)
    remove = s.remove
    assert.equal(s.relay('SIGTERM'), false, 'nothing listens')
    assert.equal(s.shutdowns(), 0)
  })

  it('bin/plinth.js emits the event this module listens to', () => {
    const bin = readFileSync(new URL('../../bin/plinth.js', import.meta.url), 'utf8')
    assert.ok(
      bin.includes(`'${RELAYED_SIGNAL_EVENT}'`),
      `bin/plinth.js does not name ${RELAYED_SIGNAL_EVENT}`,
    )
  })
})
