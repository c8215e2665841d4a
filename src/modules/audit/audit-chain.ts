import { type Kysely, sql } from 'kysely'
import { PSEUDONYM_PREFIX } from '../../core/privacy.ts'
import type { PlinthTables } from '../../infra/db/tables.ts'
import { PlinthError } from '../../shared/errors.ts'
import type { AuditCheckpoint, AuditRow } from './audit.tables.ts'
import { GENESIS_HASH, rowHash } from './audit-hash.ts'
import { chainHead, insertAuditEntry, lockChain } from './audit-rows.ts'

type Db = Kysely<PlinthTables>
const BATCH = 1000

export interface ChainBreak {
  /** The first row that does not match (its chain position and row id). */
  readonly seq: string
  readonly id: string
  readonly reason:
    | 'missing-rows'
    | 'prev-hash-mismatch'
    | 'hash-mismatch'
    | 'erasure-invalid'
    | 'erasure-unrecorded'
  /** A sentence for people. */
  readonly message: string
}

export interface ChainReport {
  readonly ok: boolean
  /** Sealed rows checked. */
  readonly checked: number
  /** Where checking started: the last pruning checkpoint, or the beginning. */
  readonly from: { readonly seq: string; readonly hash: string; readonly checkpoint: boolean }
  /** The newest sealed row (anchor it somewhere else to detect a rewritten or cut tail). */
  readonly head: { readonly seq: string; readonly hash: string } | null
  /** Committed rows not yet in the chain (a running instance seals them within seconds). */
  readonly unsealed: number
  /**
   * Rows checked whose personal fields erasure pseudonymised after sealing; of them, `unverifiable`
   * were sealed with hash v1, whose content can no longer be checked (only their place in the chain).
   */
  readonly erased: number
  readonly unverifiable: number
  readonly failure?: ChainBreak
}

async function latestCheckpoint(db: Db): Promise<AuditCheckpoint | undefined> {
  return db.selectFrom('audit_checkpoints').selectAll().orderBy('id', 'desc').limit(1).executeTakeFirst()
}

/**
 * Walks the chain from the last checkpoint (or the beginning), `BATCH` rows at a time, and returns
 * at the first row whose position, link or content does not match. Reads only.
 */
interface Walked {
  checked: number
  last: { seq: bigint; hash: string }
  failure?: ChainBreak
  erased: number
  unverifiable: number
  /** Each pseudonym erasure wrote, with the first row holding it. */
  pseudonyms: Map<string, { seq: string; id: string }>
}

async function walk(db: Db, start: { seq: bigint; hash: string }, upTo?: bigint): Promise<Walked> {
  let last = start
  let checked = 0
  const erasure = { erased: 0, unverifiable: 0, pseudonyms: new Map<string, { seq: string; id: string }>() }
  for (;;) {
    let query = db
      .selectFrom('audit_log')
      .selectAll()
      .where('seq', '>', String(last.seq))
      .orderBy('seq')
      .limit(BATCH)
    if (upTo !== undefined) query = query.where('seq', '<=', String(upTo))
    const rows = await query.execute()
    for (const row of rows) {
      const failure = check(row, last)
      if (failure) return { checked, last, failure, ...erasure }
      checked++
      last = { seq: BigInt(row.seq!), hash: row.hash! }
      if (row.erasure) {
        erasure.erased++
        if (row.erasure.v1) erasure.unverifiable++
        for (const p of row.erasure.pseudonyms)
          if (!erasure.pseudonyms.has(p)) erasure.pseudonyms.set(p, { seq: row.seq!, id: String(row.id) })
      }
    }
    if (rows.length < BATCH) return { checked, last, ...erasure }
  }
}

/**
 * What an erasure record must look like: pseudonyms that are pseudonyms, and every field it
 * rewrote holding one of them (actor and target) or nothing (address, user agent). Details and
 * changes can hold anything after erasure: only their commitment is kept.
 */
function erasureProblem(row: AuditRow): string | undefined {
  const e = row.erasure!
  if (
    !Array.isArray(e.pseudonyms) ||
    e.pseudonyms.some((p) => typeof p !== 'string' || !p.startsWith(PSEUDONYM_PREFIX))
  )
    return 'its erasure record names something other than pseudonyms'
  if (e.v1) return undefined
  for (const field of Object.keys(e.commitments ?? {})) {
    const value = row[field as keyof AuditRow]
    if (
      (field === 'actor_id' || field === 'target_id') &&
      value !== null &&
      !e.pseudonyms.includes(value as string)
    )
      return `its ${field} was rewritten by erasure but holds no pseudonym of it`
    if ((field === 'ip' || field === 'user_agent') && value !== null)
      return `its ${field} was rewritten by erasure but is not empty`
  }
  return undefined
}

function check(row: AuditRow, previous: { seq: bigint; hash: string }): ChainBreak | undefined {
  const at = { seq: row.seq!, id: String(row.id) }
  const expected = previous.seq + 1n
  if (BigInt(row.seq!) !== expected)
    return {
      ...at,
      reason: 'missing-rows',
      message: `rows ${expected}${BigInt(row.seq!) - 1n > expected ? `–${BigInt(row.seq!) - 1n}` : ''} are missing: the row after seq ${previous.seq} has seq ${row.seq}`,
    }
  if (row.prev_hash !== previous.hash)
    return {
      ...at,
      reason: 'prev-hash-mismatch',
      message: `its prev_hash does not match the hash of the row before it (seq ${previous.seq}${previous.seq === 0n ? ', the start of the chain' : ''}): a row before it was removed, replaced or re-hashed`,
    }
  if (row.erasure) {
    const problem = erasureProblem(row)
    if (problem) return { ...at, reason: 'erasure-invalid', message: problem }
    // Sealed with hash v1, whose hash covers the raw values erasure replaced: only its place in the
    // chain can be checked (decision 0010).
    if (row.erasure.v1) return undefined
  }
  let hash: string
  try {
    hash = rowHash(row, row.seq!, row.prev_hash)
  } catch (err) {
    return { ...at, reason: 'erasure-invalid', message: (err as Error).message }
  }
  if (hash !== row.hash)
    return {
      ...at,
      reason: 'hash-mismatch',
      message: 'its content does not match its hash: the row was changed after it was sealed',
    }
  return undefined
}

/** The first row holding a pseudonym for which no `user:erased` row exists (sealed or not). */
async function unrecordedErasure(db: Db, walked: Walked): Promise<ChainBreak | undefined> {
  if (walked.pseudonyms.size === 0) return undefined
  const names = [...walked.pseudonyms.keys()]
  const recorded = new Set<string>()
  for (let i = 0; i < names.length; i += BATCH) {
    const rows = await db
      .selectFrom('audit_log')
      .select('target_id')
      .distinct()
      .where('action', '=', 'user:erased')
      .where('target_id', 'in', names.slice(i, i + BATCH))
      .execute()
    for (const r of rows) recorded.add(r.target_id!)
  }
  const missing = names
    .filter((p) => !recorded.has(p))
    .map((p) => walked.pseudonyms.get(p)!)
    .sort((a, b) => (BigInt(a.seq) < BigInt(b.seq) ? -1 : 1))[0]
  if (!missing) return undefined
  return {
    ...missing,
    reason: 'erasure-unrecorded',
    message: 'it was pseudonymised, but no user:erased row records that erasure',
  }
}

/**
 * Verifies the audit chain: every sealed row after the last checkpoint follows the one before it
 * (seq + 1, prev_hash = its hash) and its hash matches its content. The first row that does not is
 * named in `failure`.
 *
 * What it cannot see: rows cut from the newest end (compare `head` with one recorded elsewhere),
 * and a chain recomputed from scratch by someone who can bypass the database's refusal.
 */
export async function verifyAuditChain(db: Db): Promise<ChainReport> {
  const checkpoint = await latestCheckpoint(db)
  const start = checkpoint
    ? { seq: BigInt(checkpoint.last_seq), hash: checkpoint.last_hash }
    : { seq: 0n, hash: GENESIS_HASH }
  const walked = await walk(db, start)
  const unrecorded = walked.failure ? undefined : await unrecordedErasure(db, walked)
  const result = unrecorded ? { ...walked, failure: unrecorded } : walked
  const { count } = await db
    .selectFrom('audit_log')
    .select((eb) => eb.fn.countAll<string>().as('count'))
    .where('seq', 'is', null)
    .executeTakeFirstOrThrow()
  const head = result.checked > 0 ? { seq: String(result.last.seq), hash: result.last.hash } : null
  return {
    ok: !result.failure,
    checked: result.checked,
    from: { seq: String(start.seq), hash: start.hash, checkpoint: checkpoint !== undefined },
    head: result.failure ? null : head,
    unsealed: Number(count),
    erased: result.erased,
    unverifiable: result.unverifiable,
    ...(result.failure ? { failure: result.failure } : {}),
  }
}

export interface PruneResult {
  /** Rows deleted. */
  readonly pruned: number
  /** The checkpoint written (absent when nothing was old enough). */
  readonly checkpoint?: { readonly lastSeq: string; readonly lastHash: string; readonly lastAt: Date }
}

/**
 * Retention: deletes the sealed rows older than `before` — the oldest stretch of the chain, up to
 * the first row at or after `before` — and, in the same transaction, records a checkpoint with the
 * last deleted row's seq and hash, from which `verifyAuditChain` resumes. The stretch is verified
 * first: a chain that does not verify is never pruned (PLINTH_AUDIT_CHAIN_BROKEN), so pruning
 * cannot erase the evidence of tampering. Runs under the chain lock, and records `audit:pruned`
 * (sealed by the next seal). With `maxRows`, it deletes at most that many of the oldest rows (call it
 * again for the next stretch: each call is one short transaction with its own checkpoint).
 *
 * @example
 * await pruneAudit(db, { before: new Date(Date.now() - config.auditRetention) })
 */
export async function pruneAudit(db: Db, options: { before: Date; maxRows?: number }): Promise<PruneResult> {
  return db.transaction().execute(async (trx) => {
    await lockChain(trx)
    // The first row to keep: the oldest sealed row at or after the cutoff (rows around the cutoff
    // may be out of time order by a little; none at or after it is ever deleted).
    const keep = await trx
      .selectFrom('audit_log')
      .select((eb) => eb.fn.min('seq').as('seq'))
      .where('seq', 'is not', null)
      .where('at', '>=', options.before)
      .executeTakeFirst()
    const head = await chainHead(trx)
    let upTo = keep?.seq ? BigInt(keep.seq as string) - 1n : head.seq
    const checkpoint = await latestCheckpoint(trx)
    const start = checkpoint
      ? { seq: BigInt(checkpoint.last_seq), hash: checkpoint.last_hash }
      : { seq: 0n, hash: GENESIS_HASH }
    if (options.maxRows !== undefined && upTo > start.seq + BigInt(options.maxRows))
      upTo = start.seq + BigInt(options.maxRows)
    if (upTo <= start.seq) return { pruned: 0 }
    const stretch = await walk(trx, start, upTo)
    const broken = stretch.failure
      ? `audit row seq ${stretch.failure.seq} (id ${stretch.failure.id}): ${stretch.failure.message}`
      : stretch.last.seq !== upTo
        ? `audit rows ${stretch.last.seq + 1n}–${upTo} are missing`
        : undefined
    if (broken)
      throw new PlinthError(
        'PLINTH_AUDIT_CHAIN_BROKEN',
        `Pruning refused: ${broken}. Run "plinth audit verify" and see docs/operations/audit.md.`,
      )
    const last = await trx
      .selectFrom('audit_log')
      .select(['at'])
      .where('seq', '=', String(upTo))
      .executeTakeFirstOrThrow()
    await sql`select set_config('plinth.audit_prune', 'on', true)`.execute(trx)
    const deleted = await trx
      .deleteFrom('audit_log')
      .where('seq', 'is not', null)
      .where('seq', '<=', String(upTo))
      .executeTakeFirst()
    await sql`select set_config('plinth.audit_prune', 'off', true)`.execute(trx)
    const pruned = Number(deleted.numDeletedRows)
    await trx
      .insertInto('audit_checkpoints')
      .values({
        pruned_before: options.before,
        last_seq: String(upTo),
        last_hash: stretch.last.hash,
        last_at: last.at,
        rows_pruned: String(pruned),
      })
      .execute()
    // The pruning itself joins the chain (sealed by the next seal, like any row).
    await insertAuditEntry(trx, {
      action: 'audit:pruned',
      actor: { type: 'system' },
      outcome: 'success',
      details: { before: options.before.toISOString(), rows: pruned, lastSeq: String(upTo) },
    })
    return { pruned, checkpoint: { lastSeq: String(upTo), lastHash: stretch.last.hash, lastAt: last.at } }
  })
}
