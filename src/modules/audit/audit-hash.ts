import { hash } from 'node:crypto'
import { type AuditRow, ERASABLE_FIELDS, type ErasableField } from './audit.tables.ts'

/** The `prev_hash` of the first row of a chain that has never been pruned. */
export const GENESIS_HASH = '0'.repeat(64)

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
> &
  Partial<Pick<AuditRow, 'salt' | 'erasure'>>

const sha256 = (text: string) => hash('sha256', text, 'hex')

/** SHA-256's block size: HMAC pads (or first hashes) its key to it (RFC 2104). */
const BLOCK = 64
const IPAD = 0x36
const OPAD = 0x5c

/**
 * HMAC-SHA256 of each of `messages` under one key, hex: exactly what `createHmac('sha256', key)`
 * gives (RFC 2104), built from two one-shot SHA-256 calls per message. `createHmac` spends about
 * 25 µs setting up each MAC under OpenSSL 3, which made it nearly all of a row's sealing cost (six
 * field salts per row); this takes about 1.5 µs per message. The inner digest is taken as hex and
 * written into the outer block: `hash(…, 'buffer')` costs three times `hash(…, 'hex')` in Node 24
 * (it allocates the result through a slower path), and `Buffer.concat` more than one allocation
 * (docs/decisions/0044-audited-write-3.md). Exported for its test.
 */
export function hmacSha256Hex(key: Buffer, messages: readonly string[]): string[] {
  const k = key.length > BLOCK ? hash('sha256', key, 'buffer') : key
  let longest = 0
  for (const m of messages) longest = Math.max(longest, Buffer.byteLength(m, 'utf8'))
  // One inner buffer for every message (the padded key, then the message written over the last
  // one's), one outer: ~1.4 µs less per row's six salts than a buffer per message.
  const inner = Buffer.allocUnsafe(BLOCK + longest)
  const outer = Buffer.allocUnsafe(BLOCK + 32)
  inner.fill(IPAD, 0, BLOCK)
  outer.fill(OPAD, 0, BLOCK)
  for (let i = 0; i < k.length; i++) {
    inner[i]! ^= k[i]!
    outer[i]! ^= k[i]!
  }
  const digests = new Array<string>(messages.length)
  for (let j = 0; j < messages.length; j++) {
    const length = inner.write(messages[j]!, BLOCK, 'utf8')
    outer.write(hash('sha256', inner.subarray(0, BLOCK + length), 'hex'), BLOCK, 'hex')
    digests[j] = hash('sha256', outer, 'hex')
  }
  return digests
}

/**
 * Hash v1 (rows sealed before migration 0010): every column but the hash itself, raw. Kept to verify
 * those rows; nothing seals with it any more.
 */
export function hashedDocumentV1(row: HashedFields, seq: string, prevHash: string): string {
  return canonicalJson({
    v: 1,
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

/** The salt of one erasable field of a row: HMAC-SHA256(row salt, field name), hex. */
export function fieldSalt(rowSalt: string, field: ErasableField): string {
  return hmacSha256Hex(Buffer.from(rowSalt, 'hex'), [field])[0]!
}

/** The commitment to one field's value: SHA-256 of its salt and the value's canonical JSON, hex. */
export function commitment(salt: string, value: unknown): string {
  return sha256(`${salt}:${canonicalJson(value ?? null)}`)
}

/** The value of an erasable field as the hash sees it. */
export function erasableValue(row: HashedFields, field: ErasableField): unknown {
  return row[field] ?? null
}

/**
 * The per-field salts of a row still able to test its values: all of them from the row salt, or
 * (after erasure) those erasure kept. Undefined for a row sealed with hash v1.
 */
export function fieldSalts(row: HashedFields): Partial<Record<ErasableField, string>> | undefined {
  if (row.salt) {
    const salts = hmacSha256Hex(Buffer.from(row.salt, 'hex'), ERASABLE_FIELDS)
    return Object.fromEntries(ERASABLE_FIELDS.map((f, i) => [f, salts[i]!]))
  }
  if (row.erasure && !row.erasure.v1) return { ...row.erasure.salts }
  return undefined
}

/**
 * The commitments a v2 hash covers: computed from the values with the row salt, or, for an erased
 * row, kept by erasure for the fields it rewrote and computed with the kept salts for the others.
 * @throws TypeError when an erasure record accounts for a field neither way.
 */
export function commitmentsOf(row: HashedFields): Record<ErasableField, string> {
  const salts = fieldSalts(row) ?? {}
  const kept = row.salt ? {} : (row.erasure?.commitments ?? {})
  const out = {} as Record<ErasableField, string>
  for (const f of ERASABLE_FIELDS) {
    const salt = salts[f]
    const c = salt ? commitment(salt, erasableValue(row, f)) : kept[f]
    if (c === undefined)
      throw new TypeError(`its erasure record accounts for neither the value nor the salt of ${f}`)
    out[f] = c
  }
  return out
}

/** A column the v2 document holds raw: text or NULL as it comes back from the database. */
const isTextOrNull = (v: unknown): v is string | null => v === null || typeof v === 'string'
const jsonText = (v: string | null) => (v === null ? 'null' : JSON.stringify(v))

/**
 * Hash v2: the non-personal columns raw, and each erasable field (actor id, target id, IP, user
 * agent, details, changes) through its salted commitment, so that erasure can replace those values
 * and drop their salts while the row still verifies (docs/decisions/0010-privacy-erasure.md).
 *
 * The document is `canonicalJson` of `{ v: 2, id, seq, at, actor: { type, tokenId }, action,
 * target: { type }, outcome, requestId, commitments, prevHash }`. For a row as it comes back from
 * the database (every raw column text or NULL) it is written directly, keys already in canonical
 * order, which takes a third of the generic walk's time: sealing and `verify` hash every row
 * (docs/decisions/0046-audited-write-4.md). Anything else takes the generic walk; the test compares
 * the two.
 */
export function hashedDocumentV2(row: HashedFields, seq: string, prevHash: string): string {
  const c = commitmentsOf(row)
  const { actor_type, actor_token_id, action, target_type, outcome, request_id } = row
  if (
    !(
      isTextOrNull(actor_type) &&
      isTextOrNull(actor_token_id) &&
      isTextOrNull(action) &&
      isTextOrNull(target_type) &&
      isTextOrNull(outcome) &&
      isTextOrNull(request_id) &&
      ERASABLE_FIELDS.every((f) => typeof c[f] === 'string')
    )
  )
    return genericDocumentV2(row, seq, prevHash, c)
  // Keys in the order canonicalJson sorts them (UTF-16 code units) at every level.
  return (
    `{"action":${jsonText(action)},"actor":{"tokenId":${jsonText(actor_token_id)},"type":${jsonText(actor_type)}},` +
    `"at":${JSON.stringify(row.at.toISOString())},` +
    `"commitments":{"actor_id":${JSON.stringify(c.actor_id)},"changes":${JSON.stringify(c.changes)},"details":${JSON.stringify(c.details)},` +
    `"ip":${JSON.stringify(c.ip)},"target_id":${JSON.stringify(c.target_id)},"user_agent":${JSON.stringify(c.user_agent)}},` +
    `"id":${JSON.stringify(String(row.id))},"outcome":${jsonText(outcome)},"prevHash":${JSON.stringify(prevHash)},` +
    `"requestId":${jsonText(request_id)},"seq":${JSON.stringify(String(seq))},"target":{"type":${jsonText(target_type)}},"v":2}`
  )
}

/** The v2 document through the generic canonical walk (what `hashedDocumentV2` writes directly). */
export function genericDocumentV2(
  row: HashedFields,
  seq: string,
  prevHash: string,
  commitments: Record<ErasableField, string> = commitmentsOf(row),
): string {
  return canonicalJson({
    v: 2,
    id: String(row.id),
    seq: String(seq),
    at: row.at.toISOString(),
    actor: { type: row.actor_type, tokenId: row.actor_token_id },
    action: row.action,
    target: { type: row.target_type },
    outcome: row.outcome,
    requestId: row.request_id,
    commitments,
    prevHash,
  })
}

/** True when the row was sealed with hash v1 (it has neither a salt nor a v2 erasure record). */
export const isV1 = (row: HashedFields): boolean => !row.salt && (!row.erasure || row.erasure.v1 === true)

/**
 * SHA-256 (hex) of the row's canonical document, which includes the previous row's hash: v2 for a
 * row with a salt or a v2 erasure record, v1 otherwise.
 */
export function rowHash(row: HashedFields, seq: string, prevHash: string): string {
  return sha256(isV1(row) ? hashedDocumentV1(row, seq, prevHash) : hashedDocumentV2(row, seq, prevHash))
}
