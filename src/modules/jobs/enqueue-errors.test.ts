import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { PlinthError } from '../../shared/errors.ts'
import { classifyEnqueueError } from './enqueue-errors.ts'

/** An error as the pg driver gives it (a SQLSTATE in `code`), optionally wrapped as pg-boss does. */
const pgError = (code: string, message = 'x') => Object.assign(new Error(message), { code })
const wrapped = (cause: Error, depth = 1): Error => {
  let err = cause
  for (let i = 0; i < depth; i++) err = new Error(`wrapper ${i}`, { cause: err })
  return err
}

describe('classifyEnqueueError', () => {
  it('passes a PlinthError through as it is', () => {
    const original = new PlinthError('PLINTH_JOB_QUEUE_FULL')
    assert.equal(classifyEnqueueError(original), original)
  })

  it('calls input PostgreSQL can never store PLINTH_JOB_INPUT_INVALID (422), with the reason, however deeply wrapped', () => {
    const cases: [string, RegExp][] = [
      ['22P05', /NUL character, an unpaired surrogate or a malformed escape/],
      ['22021', /NUL character/],
      ['22P02', /malformed escape/],
      ['22001', /longer than its column allows/],
      ['54000', /too large \(an idempotency key is limited/],
      ['22003', /out of range or malformed/],
      ['23502', /breaks a constraint/],
      ['23514', /breaks a constraint/],
    ]
    for (const [code, reason] of cases) {
      const err = classifyEnqueueError(wrapped(pgError(code), 2))
      assert.equal(err.code, 'PLINTH_JOB_INPUT_INVALID', code)
      assert.equal(err.status, 422)
      assert.match(err.message, /^The job cannot be stored: /)
      assert.match(err.message, reason, code)
    }
  })

  it('calls options pg-boss refuses (its assertions) invalid input, quoting them', () => {
    const err = classifyEnqueueError(wrapped(pgError('ERR_ASSERTION', 'retryLimit must be an integer >= 0')))
    assert.equal(err.code, 'PLINTH_JOB_INPUT_INVALID')
    assert.equal(err.message, 'The job options are refused: retryLimit must be an integer >= 0')
  })

  it('calls a duplicate a conflict (409)', () => {
    const err = classifyEnqueueError(
      wrapped(pgError('23505', 'duplicate key value violates unique constraint')),
    )
    assert.equal(err.code, 'PLINTH_DB_CONFLICT')
    assert.equal(err.status, 409)
  })

  it('calls everything else unavailable (503, retry after 5 s): a database away, an unknown failure, a non-error', () => {
    for (const err of [
      wrapped(pgError('57P01', 'terminating connection due to administrator command')),
      Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' }),
      new Error('no code at all'),
      wrapped(pgError('XX000'), 6), // deeper than the chain is followed
      'a thrown string',
      undefined,
    ]) {
      const classified = classifyEnqueueError(err)
      assert.equal(classified.code, 'PLINTH_JOBS_UNAVAILABLE', String(err))
      assert.equal(classified.status, 503)
      assert.deepEqual(classified.headers, { 'retry-after': '5' })
      assert.equal(classified.cause, err)
    }
  })
})
