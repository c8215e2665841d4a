import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { translateDbError } from './errors.ts'

const withCode = (code: string, message = 'x') => Object.assign(new Error(message), { code })

describe('translateDbError', () => {
  it('maps a database that cannot serve right now to 503 PLINTH_DB_UNAVAILABLE', () => {
    const unavailable = [
      '55000', // object_not_in_prerequisite_state: "database … is not currently accepting connections"
      '57P01',
      '57P02',
      '57P03',
      '57P04',
      '57P05',
      '53000',
      '53100',
      '53200',
      '53300', // too_many_connections
      '53400',
      '25006', // read-only transaction: a standby after a failover
      '08000',
      '08001',
      '08003',
      '08004',
      '08006',
      '08007',
      '08P01',
      'ECONNRESET',
      'ECONNREFUSED',
      'ETIMEDOUT',
      'EPIPE',
      'EHOSTUNREACH',
    ]
    for (const code of unavailable) {
      const err = translateDbError(withCode(code))
      assert.equal(err?.code, 'PLINTH_DB_UNAVAILABLE', code)
      assert.equal(err?.status, 503, code)
    }
  })

  it('maps driver messages without a code', () => {
    const cases: [string, string][] = [
      ['Query read timeout', 'PLINTH_DB_TIMEOUT'],
      ['Connection terminated unexpectedly', 'PLINTH_DB_UNAVAILABLE'],
      ['Connection terminated due to connection timeout', 'PLINTH_DB_UNAVAILABLE'],
      ['timeout exceeded when trying to connect', 'PLINTH_DB_UNAVAILABLE'],
      ['Client has encountered a connection error and is not queryable', 'PLINTH_DB_UNAVAILABLE'],
      ['Client was closed and is not queryable', 'PLINTH_DB_UNAVAILABLE'],
    ]
    for (const [message, code] of cases)
      assert.equal(translateDbError(new Error(message))?.code, code, message)
  })

  it('keeps conflicts, statement timeouts and unknown errors apart', () => {
    assert.equal(translateDbError(withCode('23505'))?.code, 'PLINTH_DB_CONFLICT')
    assert.equal(translateDbError(withCode('57014'))?.code, 'PLINTH_DB_TIMEOUT')
    assert.equal(translateDbError(withCode('42P01')), undefined) // undefined_table: a bug, stays a 500
    assert.equal(translateDbError(withCode('22P05')), undefined)
    assert.equal(translateDbError(new Error('something else')), undefined)
    assert.equal(translateDbError('not an error'), undefined)
  })
})
