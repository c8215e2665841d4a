import { PlinthError, translateDbError } from '../../shared/errors.ts'

/**
 * Why an enqueue failed, as the caller should see it. Only an engine or database that cannot
 * answer now is `PLINTH_JOBS_UNAVAILABLE` (503, retry); a job PostgreSQL refuses to store
 * (text it cannot hold, a key too large for its index, an option pg-boss refuses) fails the same
 * way on every retry, so it is `PLINTH_JOB_INPUT_INVALID` (422) with the reason; a duplicate is
 * `PLINTH_DB_CONFLICT` (409). PlinthErrors pass through.
 */
export function classifyEnqueueError(err: unknown): PlinthError {
  if (err instanceof PlinthError) return err
  for (const cause of causes(err)) {
    const code = (cause as { code?: unknown }).code
    if (typeof code !== 'string') continue
    if (code === 'ERR_ASSERTION')
      return new PlinthError('PLINTH_JOB_INPUT_INVALID', `The job options are refused: ${cause.message}`, {
        cause: err,
      })
    const reason = refusedInput(code)
    if (reason)
      return new PlinthError('PLINTH_JOB_INPUT_INVALID', `The job cannot be stored: ${reason}.`, {
        cause: err,
      })
    const db = translateDbError(cause)
    if (db?.code === 'PLINTH_DB_CONFLICT')
      return new PlinthError('PLINTH_DB_CONFLICT', undefined, { cause: err })
    if (db) break
  }
  return new PlinthError('PLINTH_JOBS_UNAVAILABLE', undefined, {
    cause: err,
    headers: { 'retry-after': '5' },
  })
}

/** The reason for SQLSTATEs that mean "this input can never be stored", else undefined. */
function refusedInput(sqlState: string): string | undefined {
  if (sqlState === '22P05' || sqlState === '22021' || sqlState === '22P02')
    return 'a string holds a NUL character, an unpaired surrogate or a malformed escape'
  if (sqlState === '22001') return 'a value is longer than its column allows'
  if (sqlState === '54000') return 'a value is too large (an idempotency key is limited to about 2,000 bytes)'
  if (sqlState.startsWith('22')) return 'a value is out of range or malformed'
  if (sqlState === '23502' || sqlState === '23514') return 'a value breaks a constraint'
  return undefined
}

/** `err` and its causes (pg-boss wraps the driver's error), at most a few deep. */
function causes(err: unknown): Error[] {
  const chain: Error[] = []
  let current = err
  while (current instanceof Error && chain.length < 5) {
    chain.push(current)
    current = current.cause
  }
  return chain
}
