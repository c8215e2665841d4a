/**
 * The audit contract the rest of Plinth depends on; the audit module (modules/audit) implements it
 * with the append-only, hash-chained `audit_log` table. It lives in core so that the module
 * context can name it without core depending on a module.
 */
import { hostname, userInfo } from 'node:os'
import type { Kysely } from 'kysely'
import type { PlinthTables } from '../infra/db/tables.ts'
import type { Principal } from './permissions.ts'
import type { Actor, SecurityEvent } from './security-events.ts'
import { PLINTH_VERSION } from './version.ts'

/** A security event as emitted (its time is added by the channel). */
export type SecurityEventInput = Omit<SecurityEvent, 'at'>

/** `noun:verb`, lower case: `user:role-changed`, `flag:updated`, `user:read`. */
export const AUDIT_ACTION = /^[a-z][a-z0-9_-]{0,63}:[a-z][a-z0-9_-]{0,63}$/

/** One thing that happened, as a caller records it. Secrets in `details` and `changes` are masked by key. */
export interface AuditEntry {
  /** `noun:verb` (AUDIT_ACTION). */
  readonly action: string
  readonly actor: Actor
  readonly target?: { readonly type: string; readonly id: string } | undefined
  readonly outcome: 'success' | 'failure'
  readonly ip?: string | undefined
  readonly userAgent?: string | undefined
  readonly requestId?: string | undefined
  /** Non-secret facts (`{ reason: 'bad-password' }`). */
  readonly details?: Readonly<Record<string, unknown>> | undefined
  /** For changes of configuration, roles, flags or settings: what changed, before and after (see `auditDiff`). */
  readonly changes?: AuditChanges | undefined
}

/** What `verifyChain` found. */
export interface AuditChainSummary {
  readonly ok: boolean
  /** Sealed rows checked. */
  readonly checked: number
  /** The newest sealed row, when the chain holds. */
  readonly head: { readonly seq: string; readonly hash: string } | null
  /** Why it does not hold, for people. */
  readonly failure?: string | undefined
}

export interface AuditChanges {
  readonly before: Readonly<Record<string, unknown>>
  readonly after: Readonly<Record<string, unknown>>
}

export interface Audit {
  /**
   * Writes one audit row with `db`, which should be the transaction of the change it records: the
   * change and its row then commit or roll back together. With the root handle it is a standalone
   * insert (for events that change nothing, such as a refused sign-in). It takes no lock, so it
   * costs the transaction one insert wherever it sits. On PostgreSQL, inside a transaction, the
   * insert leaves with the transaction's next statement (its COMMIT, usually) in one write rather
   * than in a round trip of its own: later statements still see the row and a savepoint rolled
   * back still takes it away, but a refusal by the database surfaces from that next statement
   * (decision 0038). The row joins the hash chain shortly after its transaction commits (see
   * `seal`). Throws a TypeError for an action that is not `noun:verb`.
   *
   * @example
   * await db.transaction().execute(async (trx) => {
   *   await trx.updateTable('users').set({ role }).where('id', '=', id).execute()
   *   await ctx.audit.record(trx, { action: 'user:role-changed', actor, target: { type: 'user', id },
   *     outcome: 'success', changes: auditDiff({ role: before }, { role }) })
   * })
   */
  record(db: Kysely<PlinthTables>, entry: AuditEntry): Promise<void>
  /**
   * Links every committed, not yet chained row into the hash chain (in its own short transaction,
   * under the chain's advisory lock); returns how many. Runs by itself shortly after each `record`
   * and every few seconds once `start()` ran; call it to see just-committed rows at once.
   */
  seal(): Promise<number>
  /**
   * Walks the hash chain of the audit log in `db` (the live database, or a restored copy of it:
   * backups verify the chain of what they restored) from the last retention checkpoint.
   */
  verifyChain(db: Kysely<PlinthTables>): Promise<AuditChainSummary>
  /**
   * Every successful privacy erasure the audit log in `db` still records (`user:erased` rows: the
   * erased person's pseudonym and the first time), whichever process made it. Retention may have
   * pruned older rows: callers keep what they learnt before.
   */
  erasures(db: Kysely<PlinthTables>): Promise<{ readonly pseudonym: string; readonly at: Date }[]>
  /** Starts the periodic sealing (modules start once migrations are current). */
  start(): void
  /** Stops sealing, waits for a running seal, and seals what is left (best effort). */
  close(): Promise<void>
}

/** Who acts for an authenticated request: the user, or the user's API token. */
export function actorOf(principal: Principal): Actor {
  return principal.kind === 'token' && principal.tokenId
    ? { type: 'token', id: principal.userId, tokenId: principal.tokenId }
    : { type: 'user', id: principal.userId }
}

/** The audit entry of a security event (same fields; `type` is the action). */
export function auditEntryOf(event: SecurityEventInput): AuditEntry {
  const { type, ...rest } = event
  return { action: type, ...rest }
}

/**
 * The keys whose values differ between `before` and `after` (compared as JSON), each side holding
 * only those keys; undefined when nothing changed. Secrets are masked when the entry is recorded.
 *
 * @example
 * auditDiff({ role: 'member', status: 'active' }, { role: 'admin', status: 'active' })
 * // → { before: { role: 'member' }, after: { role: 'admin' } }
 */
export function auditDiff(
  before: Readonly<Record<string, unknown>>,
  after: Readonly<Record<string, unknown>>,
): AuditChanges | undefined {
  const b: Record<string, unknown> = {}
  const a: Record<string, unknown> = {}
  for (const key of new Set([...Object.keys(before), ...Object.keys(after)])) {
    if (JSON.stringify(before[key] ?? null) === JSON.stringify(after[key] ?? null)) continue
    b[key] = before[key] ?? null
    a[key] = after[key] ?? null
  }
  return Object.keys(a).length === 0 ? undefined : { before: b, after: a }
}

/** Who performs an administrative action, and from where: what its audit entry says besides the action. */
export interface AuditCaller {
  readonly actor: Actor
  readonly ip?: string | undefined
  readonly userAgent?: string | undefined
  readonly requestId?: string | undefined
}

/** What `auditCallerOf` reads of a request (a Fastify request is one); core names no web framework. */
export interface CallerRequest {
  readonly principal?: Principal | null | undefined
  readonly ip: string
  readonly id: string
  readonly headers: { readonly 'user-agent'?: string | string[] | undefined }
}

/** The caller of an authenticated request: its principal (see `actorOf`), address, user agent and request id. */
export function auditCallerOf(request: CallerRequest): AuditCaller {
  const ua = request.headers['user-agent']
  return {
    actor: request.principal ? actorOf(request.principal) : { type: 'anonymous' },
    ip: request.ip,
    userAgent: typeof ua === 'string' ? ua : undefined,
    requestId: request.id,
  }
}

/**
 * An operator at the `plinth` command line, who signs in to no account: the system actor `cli`,
 * with the operating-system user and host in the user agent (`plinth-cli/1.2.0 (alice@ops-1)`).
 */
export function cliCaller(): AuditCaller {
  let who = 'unknown'
  try {
    who = `${userInfo().username}@${hostname()}`
  } catch {
    // no passwd entry for the uid (some containers)
  }
  return { actor: { type: 'system', id: 'cli' }, userAgent: `plinth-cli/${PLINTH_VERSION} (${who})` }
}

/**
 * The entry of an action by `caller` on `target` (outcome `success` unless given).
 *
 * @example
 * await ctx.audit.record(trx, callerEntry(caller, 'schedule:paused', { type: 'schedule', id }, {
 *   changes: auditDiff({ paused: false }, { paused: true }) }))
 */
export function callerEntry(
  caller: AuditCaller,
  action: string,
  target: AuditEntry['target'],
  rest: Pick<AuditEntry, 'details' | 'changes'> & { outcome?: AuditEntry['outcome'] } = {},
): AuditEntry {
  return {
    action,
    actor: caller.actor,
    target,
    outcome: rest.outcome ?? 'success',
    ip: caller.ip,
    userAgent: caller.userAgent,
    requestId: caller.requestId,
    ...(rest.details ? { details: rest.details } : {}),
    ...(rest.changes ? { changes: rest.changes } : {}),
  }
}
