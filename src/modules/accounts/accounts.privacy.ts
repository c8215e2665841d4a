import type { PersonalDataTable } from '../../core/privacy.ts'
import { PlinthError } from '../../shared/errors.ts'
import { sessionCacheKey, tokenCacheKey } from './cache-keys.ts'

const CREDENTIAL = 'a one-way hash of a secret only you held: a credential, useless to read'
const byUser = { column: 'user_id', holds: 'user-id' } as const
const userId = { name: 'user_id', export: 'value' } as const

/**
 * Deletes the rows of a table of opaque credentials (sessions, API tokens) and, after the commit,
 * drops their cached lookups: a request between the delete and the commit could have cached the
 * old row again, so the cache is cleared once the rows are gone for good.
 */
function deleteCredentials(
  table: 'sessions' | 'api_tokens',
  cacheKey: (hash: string) => string,
): Extract<PersonalDataTable['erase'], { action: 'custom' }> {
  return {
    action: 'custom',
    describe: 'deleted; their cached lookups are dropped, so they stop working at once',
    async run(trx, subject, ctx) {
      const rows = await trx
        .deleteFrom(table)
        .where('user_id', '=', subject.userId)
        .returning('token_hash')
        .execute()
      const forget = () =>
        Promise.all(rows.map((r) => ctx.cache.delete(cacheKey(r.token_hash)))).then(() => {})
      await forget()
      return { rows: rows.length, afterCommit: forget }
    },
  }
}

/**
 * What the accounts module holds about a person. Everything goes on erasure, but invitations the
 * person sent (which belong to the invitee) lose only the link to them; `users` goes last.
 */
export const accountsPersonalData: readonly PersonalDataTable[] = [
  {
    table: 'sessions',
    description: 'Sign-in sessions, active and ended, with the address and browser they came from',
    match: byUser,
    columns: [
      userId,
      { name: 'ip', export: 'value' },
      { name: 'user_agent', export: 'value' },
      { name: 'token_hash', export: 'presence', note: CREDENTIAL },
    ],
    context: ['id', 'created_at', 'last_seen_at', 'expires_at', 'mfa_enrolment_pending', 'revoked_at'],
    erase: deleteCredentials('sessions', sessionCacheKey),
  },
  {
    table: 'login_challenges',
    description: 'Sign-ins waiting for a second factor',
    match: byUser,
    columns: [
      userId,
      { name: 'ip', export: 'value' },
      { name: 'user_agent', export: 'value' },
      { name: 'token_hash', export: 'presence', note: CREDENTIAL },
    ],
    context: ['id', 'failures', 'created_at', 'expires_at', 'completed_at'],
    erase: { action: 'delete' },
  },
  {
    table: 'api_tokens',
    description: 'API tokens you created (never the token itself)',
    match: byUser,
    columns: [
      userId,
      { name: 'name', export: 'value' },
      { name: 'token_hint', export: 'value' },
      { name: 'token_hash', export: 'presence', note: CREDENTIAL },
    ],
    context: ['id', 'scopes', 'created_at', 'expires_at', 'last_used_at', 'revoked_at'],
    erase: deleteCredentials('api_tokens', tokenCacheKey),
  },
  {
    table: 'totp_credentials',
    description: 'Your authenticator app (TOTP) second factor',
    match: byUser,
    columns: [
      userId,
      {
        name: 'secret_ciphertext',
        export: 'presence',
        note: 'the TOTP secret, encrypted: a credential. The export says that it is set up (and since when), not what it is',
      },
    ],
    context: ['key_id', 'last_used_step', 'created_at', 'confirmed_at'],
    erase: { action: 'delete' },
  },
  {
    table: 'recovery_codes',
    description: 'Recovery codes of the second factor',
    match: byUser,
    columns: [userId, { name: 'code_hash', export: 'presence', note: CREDENTIAL }],
    context: ['id', 'used_at'],
    erase: { action: 'delete' },
  },
  {
    table: 'password_reset_tokens',
    description: 'Password reset links sent to you',
    match: byUser,
    columns: [userId, { name: 'token_hash', export: 'presence', note: CREDENTIAL }],
    context: ['id', 'created_at', 'expires_at', 'used_at'],
    erase: { action: 'delete' },
  },
  {
    table: 'invites',
    description: 'Invitations sent to your address',
    match: { column: 'email_normalized', holds: 'email' },
    columns: [
      { name: 'email_normalized', export: 'value' },
      { name: 'token_hash', export: 'presence', note: CREDENTIAL },
      {
        name: 'created_by',
        export: 'omit',
        note: 'who invited you: another person’s account',
      },
    ],
    context: ['id', 'role', 'created_at', 'expires_at', 'used_at'],
    erase: { action: 'delete' },
  },
  {
    table: 'invites',
    description: 'Invitations you sent (the invitee’s address is theirs, not yours)',
    match: { column: 'created_by', holds: 'user-id' },
    columns: [{ name: 'created_by', export: 'value' }],
    context: ['id', 'role', 'created_at', 'expires_at', 'used_at'],
    erase: { action: 'set-null' },
  },
  {
    table: 'users',
    description: 'Your account',
    match: { column: 'id', holds: 'user-id' },
    columns: [
      { name: 'id', export: 'value' },
      { name: 'email', export: 'value' },
      { name: 'email_normalized', export: 'value' },
      { name: 'password_hash', export: 'presence', note: 'a one-way hash of your password: a credential' },
    ],
    context: [
      'role',
      'status',
      'failed_logins',
      'locked_until',
      'checks_in_flight',
      'checks_in_flight_until',
      'last_login_at',
      'password_changed_at',
      'created_at',
      'updated_at',
    ],
    erase: {
      action: 'custom',
      describe: 'deleted, unless it is the last active administrator (refused: PLINTH_USER_LAST_ADMIN)',
      async run(trx, subject) {
        // Locks the person and every active administrator in id order, as role changes do, so that
        // two administrators erasing each other cannot both succeed.
        const rows = await trx
          .selectFrom('users')
          .select(['id', 'role', 'status'])
          .where((eb) =>
            eb.or([
              eb('id', '=', subject.userId),
              eb.and([eb('role', '=', 'admin'), eb('status', '=', 'active')]),
            ]),
          )
          .orderBy('id')
          .forUpdate()
          .execute()
        const target = rows.find((r) => r.id === subject.userId)
        if (!target) throw new PlinthError('PLINTH_USER_NOT_FOUND')
        if (lastAdmin(target, rows)) throw new PlinthError('PLINTH_USER_LAST_ADMIN')
        const deleted = await trx.deleteFrom('users').where('id', '=', subject.userId).executeTakeFirst()
        return { rows: Number(deleted.numDeletedRows) }
      },
    },
    last: true,
  },
]

type UserState = { id: string; role: string; status: string }

/** True when `target` is the only active administrator among `rows`. */
export function lastAdmin(target: UserState, rows: readonly UserState[]): boolean {
  const active = (r: UserState) => r.role === 'admin' && r.status === 'active'
  return active(target) && !rows.some((r) => r.id !== target.id && active(r))
}
