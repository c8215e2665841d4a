import { createHash } from 'node:crypto'
import type { AuditRow } from './audit.tables.ts'

/** The `prev_hash` of the first row of a chain that has never been pruned. */
export const GENESIS_HASH = '0'.repeat(64)
/** Bumped if the encoding ever changes; part of every hashed document. */
const VERSION = 1

/**
 * Canonical JSON (RFC 8785 style): object keys sorted by UTF-16 code units, no whitespace, strings
 * and numbers as ECMAScript `JSON.stringify` writes them; `undefined` members are left out.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null'
  if (Array.isArray(value))
    return `[${value.map((v) => canonicalJson(v === undefined ? null : v)).join(',')}]`
  if (value instanceof Date) return JSON.stringify(value.toISOString())
  const record = value as Record<string, unknown>
  const keys = Object.keys(record)
    .filter((k) => record[k] !== undefined)
    .sort()
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(record[k])}`).join(',')}}`
}

/** The fields a row's hash covers, as they come back from the database. */
export type HashedFields = Pick<
  AuditRow,
  | 'id'
  | 'at'
  | 'actor_type'
  | 'actor_id'
  | 'actor_token_id'
  | 'action'
  | 'target_type'
  | 'target_id'
  | 'outcome'
  | 'ip'
  | 'user_agent'
  | 'request_id'
  | 'details'
  | 'changes'
>

/** The document a row's hash is computed over: every column but the hash itself. */
export function hashedDocument(row: HashedFields, seq: string, prevHash: string): string {
  return canonicalJson({
    v: VERSION,
    id: String(row.id),
    seq: String(seq),
    at: row.at.toISOString(),
    actor: { type: row.actor_type, id: row.actor_id, tokenId: row.actor_token_id },
    action: row.action,
    target: { type: row.target_type, id: row.target_id },
    outcome: row.outcome,
    ip: row.ip,
    userAgent: row.user_agent,
    requestId: row.request_id,
    details: row.details ?? null,
    changes: row.changes ?? null,
    prevHash,
  })
}

/** SHA-256 (hex) of the row's canonical document, which includes the previous row's hash. */
export function rowHash(row: HashedFields, seq: string, prevHash: string): string {
  return createHash('sha256')
    .update(hashedDocument(row, seq, prevHash))
    .digest('hex')
}
