import { PlinthError } from '../../core/errors.ts'
import type { ModuleContext } from '../../core/module.ts'
import type { Role } from '../../core/permissions.ts'
import { assertPasswordPolicy, hashPassword } from './passwords.ts'
import { normalizeEmail } from './secrets.ts'

/**
 * Creates a user directly (the CLI and the first-start bootstrap); the HTTP API goes through the
 * account service instead. Emits `user:created` with a system actor.
 */
export async function createUserDirect(
  ctx: ModuleContext,
  input: { email: string; password: string; role: Role },
): Promise<string> {
  assertPasswordPolicy(input.password, { email: input.email })
  const email = normalizeEmail(input.email)
  const existing = await ctx.db.kysely
    .selectFrom('users')
    .select('id')
    .where('email_normalized', '=', email)
    .executeTakeFirst()
  if (existing) throw new PlinthError('PLINTH_USER_EXISTS')
  const row = await ctx.db.kysely
    .insertInto('users')
    .values({
      email: input.email.trim(),
      email_normalized: email,
      password_hash: await hashPassword(input.password),
      role: input.role,
      password_changed_at: new Date(),
    })
    .returning('id')
    .executeTakeFirstOrThrow()
  ctx.securityEvents.emit({
    type: 'user:created',
    outcome: 'success',
    actor: { type: 'system' },
    target: { type: 'user', id: row.id },
    details: { role: input.role },
  })
  return row.id
}

/** With PLINTH_ADMIN_EMAIL and PLINTH_ADMIN_PASSWORD(_FILE) set and no administrator yet, creates one. */
export async function bootstrapAdmin(ctx: ModuleContext): Promise<void> {
  const { adminEmail, adminPassword } = ctx.config
  if (!adminEmail || !adminPassword) return
  const admin = await ctx.db.kysely
    .selectFrom('users')
    .select('id')
    .where('role', '=', 'admin')
    .limit(1)
    .executeTakeFirst()
  if (admin) return
  const id = await createUserDirect(ctx, { email: adminEmail, password: adminPassword, role: 'admin' })
  ctx.logger.info(
    { userId: id, email: adminEmail },
    'created the first administrator from PLINTH_ADMIN_EMAIL',
  )
}
