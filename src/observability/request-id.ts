import { randomUUID } from 'node:crypto'

/** Request ids we accept from callers: up to 128 safe characters (UUIDs, ULIDs, trace ids). */
const SAFE_REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/

export const REQUEST_ID_HEADER = 'x-request-id'

/** The caller's request id when it is safe to echo and log, otherwise a new UUID. */
export function pickRequestId(header: string | string[] | undefined): string {
  const value = Array.isArray(header) ? header[0] : header
  return value !== undefined && SAFE_REQUEST_ID.test(value) ? value : randomUUID()
}
