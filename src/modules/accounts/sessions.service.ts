import type { Kysely, Transaction } from 'kysely'
import type { Role } from '../../core/permissions.ts'
import type { Cache } from '../../infra/cache/cache.ts'
import type { PlinthTables } from '../../infra/db/tables.ts'
import { hashSecret, looksLikeSecret, newSecret, TOKEN_PREFIX } from './secrets.ts'

/** How long a resolved session may be served from cache: a revoked session lives at most this long elsewhere. */
export const SESSION_CACHE_TTL_MS = 5000
/** last_seen_at is written at most this often per session, or every tenth of the idle timeout when that is shorter. */
const TOUCH_EVERY_MS = 60_000

type Db = Kysely<PlinthTables> | Transaction<PlinthTables>

/** The cache key of a resolved session, by token hash. */
import { sessionCacheKey } from './cache-keys.ts'

export interface SessionMeta {
  readonly ip?: string | undefined
  readonly userAgent?: string | undefined
}

/** What a valid session token resolves to (cached as JSON, hence the plain types). */
export interface ResolvedSession {
  readonly sessionId: string
  readonly userId: string
  readonly role: Role
  readonly expiresAt: string
  readonly lastSeenAt: string
  readonly mfaEnrolmentPending: boolean
}

export interface SessionView {
  readonly id: string
  readonly createdAt: Date
  readonly lastSeenAt: Date
  readonly expiresAt: Date
  readonly ip: string | null
  readonly userAgent: string | null
}

export interface SessionService {
  create(
    userId: string,
    meta: SessionMeta,
    options?: { mfaEnrolmentPending?: boolean; trx?: Db },
  ): Promise<{ token: string; sessionId: string; expiresAt: Date }>
  /** The session behind a token, or null when unknown, expired (idle or absolute), revoked or its user disabled. */
  resolve(token: string): Promise<ResolvedSession | null>
  list(userId: string): Promise<SessionView[]>
  /** Revokes one session of the user; false when it is not theirs or not active. */
  revoke(userId: string, sessionId: string, trx?: Db): Promise<boolean>
  /** Revokes every active session of the user except `exceptSessionId`; returns how many. */
  revokeAll(userId: string, options?: { exceptSessionId?: string; trx?: Db }): Promise<number>
  /**
   * Drops the cache entries of the user's recently revoked sessions. Revocations inside a
   * transaction clear the cache before the commit, and a request in between may cache the old row
   * again; callers run this after the commit so that it cannot survive.
   */
  forgetRevoked(userId: string): Promise<void>
}

/**
 * Opaque session tokens (`pls_` + 256 random bits), stored as SHA-256 hashes, with idle and absolute
 * expiry. Lookups are cached for SESSION_CACHE_TTL_MS; revocation deletes the cache entry, so on
 * one instance (or with Redis) it is immediate and elsewhere it takes at most that long.
 */
export function createSessionService(deps: {
  db: Kysely<PlinthTables>
  cache: Cache
  idleTimeoutMs: number
  maxAgeMs: number
  now?: () => number
}): SessionService {
  const { db, cache } = deps
  const now = deps.now ?? Date.now
  const key = sessionCacheKey
  const forget = (hashes: readonly string[]) => Promise.all(hashes.map((h) => cache.delete(key(h))))
  // Touched often enough that a session in use never looks idle, even with a short idle timeout.
  const touchEveryMs = Math.min(TOUCH_EVERY_MS, Math.floor(deps.idleTimeoutMs / 10))
  // The session's two instants as numbers, parsed once per cached object (the memory cache hands
  // back the same object on every hit; Date.parse of both ISO strings, several times per request,
  // was a visible share of an authenticated request's CPU). A Redis hit is a new object: parsed once.
  const instants = new WeakMap<ResolvedSession, { expiresAt: number; lastSeenAt: number }>()
  const instantsOf = (s: ResolvedSession) => {
    let i = instants.get(s)
    if (!i) {
      i = { expiresAt: Date.parse(s.expiresAt), lastSeenAt: Date.parse(s.lastSeenAt) }
      instants.set(s, i)
    }
    return i
  }
  const isIdle = (s: ResolvedSession, t: number) => instantsOf(s).lastSeenAt + deps.idleTimeoutMs <= t

  async function revokeWhere(
    userId: string,
    trx: Db,
    filter: { id?: string; exceptId?: string },
  ): Promise<number> {
    let query = trx
      .updateTable('sessions')
      .set({ revoked_at: new Date(now()) })
      .where('user_id', '=', userId)
      .where('revoked_at', 'is', null)
    if (filter.id) query = query.where('id', '=', filter.id)
    if (filter.exceptId) query = query.where('id', '!=', filter.exceptId)
    const rows = await query.returning('token_hash').execute()
    await forget(rows.map((r) => r.token_hash))
    return rows.length
  }

  return {
    async create(userId, meta, options = {}) {
      const { secret, hash } = newSecret(TOKEN_PREFIX.session)
      const expiresAt = new Date(now() + deps.maxAgeMs)
      const row = await (options.trx ?? db)
        .insertInto('sessions')
        .values({
          user_id: userId,
          token_hash: hash,
          ip: meta.ip ?? null,
          user_agent: meta.userAgent?.slice(0, 512) ?? null,
          expires_at: expiresAt,
          last_seen_at: new Date(now()),
          mfa_enrolment_pending: options.mfaEnrolmentPending ?? false,
        })
        .returning('id')
        .executeTakeFirstOrThrow()
      return { token: secret, sessionId: row.id, expiresAt }
    },

    async resolve(token) {
      if (!looksLikeSecret(token, TOKEN_PREFIX.session)) return null
      const hash = hashSecret(token)
      const t = now()
      let session = await cache.get<ResolvedSession>(key(hash))
      // Another instance may have used the session since this copy was cached: ask the database.
      if (session && isIdle(session, t)) session = undefined
      // Only a database read (or touch) starts a cache entry. Refreshing it on every hit would keep
      // a session revoked on another instance (without a shared cache) alive for as long as it is used.
      let confirmed = !session
      if (!session) {
        const row = await db
          .selectFrom('sessions')
          .innerJoin('users', 'users.id', 'sessions.user_id')
          .select([
            'sessions.id',
            'sessions.user_id',
            'sessions.expires_at',
            'sessions.last_seen_at',
            'sessions.mfa_enrolment_pending',
            'users.role',
          ])
          .where('sessions.token_hash', '=', hash)
          .where('sessions.revoked_at', 'is', null)
          .where('users.status', '=', 'active')
          .executeTakeFirst()
        if (!row) return null
        session = {
          sessionId: row.id,
          userId: row.user_id,
          role: row.role,
          expiresAt: row.expires_at.toISOString(),
          lastSeenAt: row.last_seen_at.toISOString(),
          mfaEnrolmentPending: row.mfa_enrolment_pending,
        }
      }
      if (instantsOf(session).expiresAt <= t || isIdle(session, t)) {
        await cache.delete(key(hash))
        return null
      }
      if (t - instantsOf(session).lastSeenAt >= touchEveryMs) {
        const touched = await db
          .updateTable('sessions')
          .set({ last_seen_at: new Date(t) })
          .where('id', '=', session.sessionId)
          .where('revoked_at', 'is', null)
          .executeTakeFirst()
        if (Number(touched.numUpdatedRows) !== 1) {
          await cache.delete(key(hash))
          return null
        }
        session = { ...session, lastSeenAt: new Date(t).toISOString() }
        confirmed = true
      }
      if (confirmed) await cache.set(key(hash), session, SESSION_CACHE_TTL_MS)
      return session
    },

    async list(userId) {
      const t = new Date(now())
      const rows = await db
        .selectFrom('sessions')
        .select(['id', 'created_at', 'last_seen_at', 'expires_at', 'ip', 'user_agent'])
        .where('user_id', '=', userId)
        .where('revoked_at', 'is', null)
        .where('expires_at', '>', t)
        .where('last_seen_at', '>', new Date(now() - deps.idleTimeoutMs))
        .orderBy('last_seen_at', 'desc')
        .execute()
      return rows.map((r) => ({
        id: r.id,
        createdAt: r.created_at,
        lastSeenAt: r.last_seen_at,
        expiresAt: r.expires_at,
        ip: r.ip,
        userAgent: r.user_agent,
      }))
    },

    async revoke(userId, sessionId, trx) {
      return (await revokeWhere(userId, trx ?? db, { id: sessionId })) > 0
    },

    async forgetRevoked(userId) {
      const rows = await db
        .selectFrom('sessions')
        .select('token_hash')
        .where('user_id', '=', userId)
        .where('revoked_at', '>', new Date(now() - 2 * SESSION_CACHE_TTL_MS))
        .execute()
      await forget(rows.map((r) => r.token_hash))
    },

    revokeAll(userId, options = {}) {
      return revokeWhere(
        userId,
        options.trx ?? db,
        options.exceptSessionId ? { exceptId: options.exceptSessionId } : {},
      )
    },
  }
}
