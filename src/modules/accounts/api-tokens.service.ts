import type { Kysely, Transaction } from 'kysely'
import { type AnyPermission, isKnownPermission, ROLE_PERMISSIONS, type Role } from '../../core/permissions.ts'
import type { Cache } from '../../infra/cache/cache.ts'
import type { PlinthTables } from '../../infra/db/tables.ts'
import { PlinthError } from '../../shared/errors.ts'
import { tokenCacheKey } from './cache-keys.ts'
import { owesMfaEnrolment, owesMfaEnrolmentSql } from './mfa-policy.ts'
import { hashSecret, looksLikeSecret, newSecret, TOKEN_PREFIX } from './secrets.ts'
import { SESSION_CACHE_TTL_MS } from './sessions.service.ts'

/** last_used_at is written at most this often per token. */
const TOUCH_EVERY_MS = 60_000
export const MAX_TOKENS_PER_USER = 50

/** The cache key of a resolved API token, by token hash. */

/** Work that joins a change's transaction, given what the change produced. */
export type Within<T> = (trx: Transaction<PlinthTables>, result: T) => Promise<void>

export interface ResolvedToken {
  readonly tokenId: string
  readonly userId: string
  readonly role: Role
  readonly scopes: readonly AnyPermission[]
  readonly expiresAt: string | null
  readonly lastUsedAt: string | null
  /** The owner's role requires a second factor they have not enrolled: refused until they do. */
  readonly mfaEnrolmentPending?: boolean
}

export interface TokenView {
  readonly id: string
  readonly name: string
  readonly hint: string
  readonly scopes: readonly string[]
  readonly createdAt: Date
  readonly expiresAt: Date | null
  readonly lastUsedAt: Date | null
  /** Refused (403 PLINTH_AUTH_MFA_ENROLMENT_REQUIRED) until the owner enrols a second factor. */
  readonly mfaEnrolmentRequired: boolean
}

/**
 * Personal access tokens: `plt_` + 256 random bits, shown once, stored hashed, with a name, scopes
 * (a subset of the owner's role), optional expiry, last-used time, revocable. Lookups are cached
 * like sessions.
 */
export function createApiTokenService(deps: { db: Kysely<PlinthTables>; cache: Cache; now?: () => number }) {
  const { db, cache } = deps
  const now = deps.now ?? Date.now
  const key = tokenCacheKey

  return {
    /** Creates a token; `within` runs in the same transaction (to record it in the audit log). */
    async create(
      input: {
        userId: string
        role: Role
        name: string
        scopes: readonly AnyPermission[]
        expiresAt?: Date
      },
      within?: Within<TokenView>,
    ) {
      const unknown = input.scopes.filter((s) => !isKnownPermission(s))
      if (unknown.length > 0)
        throw new PlinthError(
          'PLINTH_HTTP_VALIDATION_FAILED',
          `Unknown permissions: ${unknown.join(', ')}.`,
          {
            errors: unknown.map((s) => ({
              in: 'body',
              field: 'scopes',
              message: `${s} is not a permission`,
            })),
          },
        )
      const allowed = ROLE_PERMISSIONS[input.role]
      const refused = input.scopes.filter((s) => !allowed.has(s))
      if (refused.length > 0) {
        throw new PlinthError('PLINTH_AUTH_FORBIDDEN', `Your role cannot grant: ${refused.join(', ')}.`, {
          errors: refused.map((s) => ({
            in: 'body',
            field: 'scopes',
            message: `${s} is not granted to your role`,
          })),
        })
      }
      if (input.expiresAt && input.expiresAt.getTime() <= now()) {
        throw new PlinthError('PLINTH_HTTP_VALIDATION_FAILED', 'expiresAt must be in the future.', {
          errors: [{ in: 'body', field: 'expiresAt', message: 'must be in the future' }],
        })
      }
      return db.transaction().execute(async (trx) => {
        // The owner's row is locked first: concurrent creations for one user take turns, so the
        // count below cannot be read by two of them before either inserts (the cap holds).
        const owner = await trx
          .selectFrom('users')
          .select('id')
          .where('id', '=', input.userId)
          .forUpdate()
          .executeTakeFirst()
        if (!owner) throw new PlinthError('PLINTH_USER_NOT_FOUND')
        const { count } = await trx
          .selectFrom('api_tokens')
          .select((eb) => eb.fn.countAll<string>().as('count'))
          .where('user_id', '=', input.userId)
          .where('revoked_at', 'is', null)
          // Expired tokens are not active: they must not use up the allowance.
          .where((eb) => eb.or([eb('expires_at', 'is', null), eb('expires_at', '>', new Date(now()))]))
          .executeTakeFirstOrThrow()
        if (Number(count) >= MAX_TOKENS_PER_USER) {
          throw new PlinthError(
            'PLINTH_DB_CONFLICT',
            `At most ${MAX_TOKENS_PER_USER} active tokens per user; revoke one first.`,
          )
        }
        const { secret, hash } = newSecret(TOKEN_PREFIX.apiToken)
        const row = await trx
          .insertInto('api_tokens')
          .values({
            user_id: input.userId,
            name: input.name,
            token_hash: hash,
            token_hint: `${secret.slice(0, 8)}…${secret.slice(-4)}`,
            scopes: [...new Set(input.scopes)],
            expires_at: input.expiresAt ?? null,
          })
          .returning(['id', 'name', 'token_hint', 'scopes', 'created_at', 'expires_at', 'last_used_at'])
          .executeTakeFirstOrThrow()
        const view = toView(row)
        await within?.(trx, view)
        return { token: secret, view }
      })
    },

    async resolve(token: string): Promise<ResolvedToken | null> {
      if (!looksLikeSecret(token, TOKEN_PREFIX.apiToken)) return null
      const hash = hashSecret(token)
      let resolved = await cache.get<ResolvedToken>(key(hash))
      // Only a database read (or touch) starts a cache entry, as for sessions: refreshing it on every
      // hit would keep a token revoked on another instance alive for as long as it is used.
      let confirmed = !resolved
      if (!resolved) {
        const row = await db
          .selectFrom('api_tokens')
          .innerJoin('users', 'users.id', 'api_tokens.user_id')
          .select([
            'api_tokens.id',
            'api_tokens.user_id',
            'api_tokens.scopes',
            'api_tokens.expires_at',
            'api_tokens.last_used_at',
            'users.role',
            owesMfaEnrolmentSql('api_tokens.user_id').as('mfa_enrolment_pending'),
          ])
          .where('api_tokens.token_hash', '=', hash)
          .where('api_tokens.revoked_at', 'is', null)
          .where('users.status', '=', 'active')
          .executeTakeFirst()
        if (!row) return null
        resolved = {
          tokenId: row.id,
          userId: row.user_id,
          role: row.role,
          scopes: row.scopes as AnyPermission[],
          expiresAt: row.expires_at?.toISOString() ?? null,
          lastUsedAt: row.last_used_at?.toISOString() ?? null,
          mfaEnrolmentPending: row.mfa_enrolment_pending,
        }
      }
      const t = now()
      if (resolved.expiresAt && Date.parse(resolved.expiresAt) <= t) {
        await cache.delete(key(hash))
        return null
      }
      if (!resolved.lastUsedAt || t - Date.parse(resolved.lastUsedAt) >= TOUCH_EVERY_MS) {
        const touched = await db
          .updateTable('api_tokens')
          .set({ last_used_at: new Date(t) })
          .where('id', '=', resolved.tokenId)
          .where('revoked_at', 'is', null)
          .executeTakeFirst()
        if (Number(touched.numUpdatedRows) !== 1) {
          await cache.delete(key(hash))
          return null
        }
        resolved = { ...resolved, lastUsedAt: new Date(t).toISOString() }
        confirmed = true
      }
      if (confirmed) await cache.set(key(hash), resolved, SESSION_CACHE_TTL_MS)
      return resolved
    },

    async list(userId: string): Promise<TokenView[]> {
      const rows = await db
        .selectFrom('api_tokens')
        .select(['id', 'name', 'token_hint', 'scopes', 'created_at', 'expires_at', 'last_used_at'])
        .where('user_id', '=', userId)
        .where('revoked_at', 'is', null)
        .orderBy('created_at', 'desc')
        .execute()
      const owed = await owesMfaEnrolment(db, userId)
      return rows.map((r) => toView(r, owed))
    },

    /** Drops the cached lookups of the user's tokens, so that a change of their role applies at once. */
    async forget(userId: string): Promise<void> {
      const rows = await db
        .selectFrom('api_tokens')
        .select('token_hash')
        .where('user_id', '=', userId)
        .where('revoked_at', 'is', null)
        .execute()
      await Promise.all(rows.map((r) => cache.delete(key(r.token_hash))))
    },

    /**
     * Revokes the user's token (all of them without `tokenId`); returns how many. `within` runs in
     * the same transaction when something was revoked (to record it in the audit log); the cached
     * lookups are dropped after the commit, so that no request can cache the old row in between.
     */
    async revoke(userId: string, tokenId?: string, within?: Within<number>): Promise<number> {
      const rows = await db.transaction().execute(async (trx) => {
        let query = trx
          .updateTable('api_tokens')
          .set({ revoked_at: new Date(now()) })
          .where('user_id', '=', userId)
          .where('revoked_at', 'is', null)
        if (tokenId) query = query.where('id', '=', tokenId)
        const revoked = await query.returning('token_hash').execute()
        if (revoked.length > 0) await within?.(trx, revoked.length)
        return revoked
      })
      await Promise.all(rows.map((r) => cache.delete(key(r.token_hash))))
      return rows.length
    },
  }
}

export type ApiTokenService = ReturnType<typeof createApiTokenService>

function toView(
  r: {
    id: string
    name: string
    token_hint: string
    scopes: string[]
    created_at: Date
    expires_at: Date | null
    last_used_at: Date | null
  },
  mfaEnrolmentRequired = false,
): TokenView {
  return {
    id: r.id,
    name: r.name,
    hint: r.token_hint,
    scopes: r.scopes,
    createdAt: r.created_at,
    expiresAt: r.expires_at,
    lastUsedAt: r.last_used_at,
    mfaEnrolmentRequired,
  }
}
