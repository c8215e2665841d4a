import assert from 'node:assert/strict'
import { Writable } from 'node:stream'
import { describe, it } from 'node:test'
import pino from 'pino'
import { createErrorReports, type ErrorReport } from './error-reports.ts'

function memoryLogger() {
  const lines: Record<string, unknown>[] = []
  const stream = new Writable({
    write(chunk, _enc, done) {
      for (const l of String(chunk).split('\n').filter(Boolean)) lines.push(JSON.parse(l))
      done()
    },
  })
  return { logger: pino({ level: 'info' }, stream), lines }
}

const report = (where: string, extra: Partial<ErrorReport> = {}): ErrorReport => ({
  error: new Error(`failed at ${where}`),
  source: 'http',
  where,
  ...extra,
})

describe('error reports', () => {
  it('hands every report to every listener, keeping a given trace id, until a listener unsubscribes', () => {
    const { logger } = memoryLogger()
    const reports = createErrorReports({ logger })
    const first: ErrorReport[] = []
    const second: ErrorReport[] = []
    const stopFirst = reports.subscribe((r) => {
      first.push(r)
    })
    reports.subscribe((r) => {
      second.push(r)
    })
    reports.report(report('GET /a', { requestId: 'req-1', traceId: 'trace-1' }))
    stopFirst()
    reports.report(report('GET /b'))
    assert.deepEqual(
      first.map((r) => r.where),
      ['GET /a'],
    )
    assert.deepEqual(
      second.map((r) => [r.where, r.requestId, r.traceId]),
      [
        ['GET /a', 'req-1', 'trace-1'],
        ['GET /b', undefined, undefined], // no active span: no trace id to fill in
      ],
    )
  })

  it('never throws at the reporter: a listener that throws or rejects is logged at warn, the others still run', async () => {
    const { logger, lines } = memoryLogger()
    const reports = createErrorReports({ logger })
    const seen: string[] = []
    reports.subscribe(() => {
      throw new Error('listener broke')
    })
    reports.subscribe(async () => {
      throw new Error('database down')
    })
    reports.subscribe((r) => {
      seen.push(r.where)
    })
    assert.doesNotThrow(() => reports.report(report('job plinth.x', { source: 'job' })))
    assert.deepEqual(seen, ['job plinth.x'])
    await reports.settle(1000)
    const warned = lines.filter((l) => l.msg === 'an error report could not be recorded')
    assert.deepEqual(warned.map((l) => (l.err as { message: string }).message).sort(), [
      'database down',
      'listener broke',
    ])
    assert.ok(warned.every((l) => l.level === 40))
  })

  it('settle() waits for listeners still recording, and gives up after its timeout', async () => {
    const { logger } = memoryLogger()
    const reports = createErrorReports({ logger })
    await reports.settle(10) // nothing pending: returns at once

    let finish: (() => void) | undefined
    let recorded = false
    reports.subscribe(
      () =>
        new Promise<void>((resolve) => {
          finish = () => {
            recorded = true
            resolve()
          }
        }),
    )
    reports.report(report('uncaughtException', { source: 'process' }))
    const started = performance.now()
    await reports.settle(30)
    assert.equal(recorded, false, 'a listener that takes longer than the timeout is not waited for')
    assert.ok(performance.now() - started >= 25)

    const settling = reports.settle(60_000)
    finish?.()
    await settling
    assert.equal(recorded, true)
    await reports.settle(60_000) // the finished work is no longer pending
  })
})
