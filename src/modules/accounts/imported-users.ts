import type { Kysely } from 'kysely'
import type { ImportedUser } from '../../core/identity.ts'
import type { PlinthTables } from '../../infra/db/tables.ts'
import { PlinthError } from '../../shared/errors.ts'
import { isLegacyHash } from './passwords.ts'
import { normalizeEmail } from './secrets.ts'

/**
 * `UserDirectory.importUser`: an account from another system, with its bcrypt hash kept as a legacy
 * hash (verified, then replaced by argon2id, at the next sign-in: login.service.ts). An address that
 * already has an account is left alone.
 */
export async function importUser(
  db: Kysely<PlinthTables>,
  input: ImportedUser,
): Promise<{ id: string; outcome: 'created' | 'exists' }> {
  if (input.legacyPasswordHash !== null && !isLegacyHash(input.legacyPasswordHash))
    throw new PlinthError('PLINTH_IMPORT_UNSUPPORTED_HASH')
  const emailNormalized = normalizeEmail(input.email)
  const row = await db
    .insertInto('users')
    .values({
      email: input.email.trim(),
      email_normalized: emailNormalized,
      password_hash: input.legacyPasswordHash,
      role: input.role ?? 'member',
      ...(input.createdAt ? { created_at: input.createdAt } : {}),
    })
    .onConflict((oc) => oc.column('email_normalized').doNothing())
    .returning('id')
    .executeTakeFirst()
  if (row) return { id: row.id, outcome: 'created' }
  const existing = await db
    .selectFrom('users')
    .select('id')
    .where('email_normalized', '=', emailNormalized)
    .executeTakeFirstOrThrow()
  return { id: existing.id, outcome: 'exists' }
}
