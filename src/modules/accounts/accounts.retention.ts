import type { Kysely } from 'kysely'
import type { PlinthConfig } from '../../config/config.schema.ts'
import { deleteInBatches, formatPeriod, type RetentionRule } from '../../core/retention.ts'
import type { PlinthTables } from '../../infra/db/tables.ts'

/**
 * Single-use rows (sign-in challenges, password reset links, invitations) are kept this long after
 * they were used or expired: long enough to look into a support case about a link, while the audit
 * log keeps the durable record.
 */
export const SINGLE_USE_GRACE_MS = 86_400_000

type Db = Kysely<PlinthTables>
type SingleUseTable = 'login_challenges' | 'password_reset_tokens' | 'invites'

const deleted = (r: { numDeletedRows: bigint }) => Number(r.numDeletedRows)

/** Deletes up to `limit` rows of a single-use table used (or completed) or expired before `cutoff`. */
function deleteSingleUse(db: Db, table: SingleUseTable, cutoff: Date, limit: number): Promise<number> {
  const done = table === 'login_challenges' ? 'completed_at' : 'used_at'
  return (db as Kysely<Record<SingleUseTable, { id: string; expires_at: Date; [done]: Date | null }>>)
    .deleteFrom(table)
    .where('id', 'in', (qb) =>
      qb
        .selectFrom(table)
        .select('id')
        .where((eb) => eb.or([eb('expires_at', '<', cutoff), eb(done, '<', cutoff)]))
        .limit(limit),
    )
    .executeTakeFirst()
    .then(deleted)
}

/**
 * What retention deletes for accounts:
 * - `accounts.sessions`: sessions that ended (revoked, idle for `PLINTH_SESSION_IDLE_TIMEOUT`, or
 *   past their expiry) more than `PLINTH_SESSION_RETENTION` ago;
 * - `accounts.api-tokens`: API tokens revoked or expired more than `PLINTH_SESSION_RETENTION` ago
 *   (until then an expired token is still listed to its owner);
 * - `accounts.login-challenges`, `accounts.password-reset-tokens`, `accounts.invites`: single-use
 *   rows a day (`SINGLE_USE_GRACE_MS`) after they were used or expired.
 */
export function accountsRetention(config: PlinthConfig): RetentionRule[] {
  const kept = formatPeriod(config.sessionRetention)
  const singleUse = (name: string, table: SingleUseTable, what: string): RetentionRule => ({
    name,
    describe: `${what} used or expired more than 1d ago`,
    run: (run) =>
      deleteInBatches(run, (limit) =>
        deleteSingleUse(run.db, table, new Date(run.now.getTime() - SINGLE_USE_GRACE_MS), limit),
      ),
  })
  return [
    {
      name: 'accounts.sessions',
      describe: `sessions that ended more than ${kept} ago (PLINTH_SESSION_RETENTION)`,
      run(run) {
        const cutoff = new Date(run.now.getTime() - config.sessionRetention)
        const idleBefore = new Date(cutoff.getTime() - config.sessionIdleTimeout)
        return deleteInBatches(run, (limit) =>
          run.db
            .deleteFrom('sessions')
            .where('id', 'in', (qb) =>
              qb
                .selectFrom('sessions')
                .select('id')
                .where((eb) =>
                  eb.or([
                    eb('expires_at', '<', cutoff),
                    eb('revoked_at', '<', cutoff),
                    eb('last_seen_at', '<', idleBefore),
                  ]),
                )
                .limit(limit),
            )
            .executeTakeFirst()
            .then(deleted),
        )
      },
    },
    {
      name: 'accounts.api-tokens',
      describe: `API tokens revoked or expired more than ${kept} ago (PLINTH_SESSION_RETENTION)`,
      run(run) {
        const cutoff = new Date(run.now.getTime() - config.sessionRetention)
        return deleteInBatches(run, (limit) =>
          run.db
            .deleteFrom('api_tokens')
            .where('id', 'in', (qb) =>
              qb
                .selectFrom('api_tokens')
                .select('id')
                .where((eb) => eb.or([eb('revoked_at', '<', cutoff), eb('expires_at', '<', cutoff)]))
                .limit(limit),
            )
            .executeTakeFirst()
            .then(deleted),
        )
      },
    },
    singleUse('accounts.login-challenges', 'login_challenges', 'sign-in challenges (second factor)'),
    singleUse('accounts.password-reset-tokens', 'password_reset_tokens', 'password reset links'),
    singleUse('accounts.invites', 'invites', 'invitations'),
  ]
}
