import { auditEntryOf, type SecurityEventInput } from '../../core/audit.ts'
import type { ModuleContext } from '../../core/module.ts'
import type { Role } from '../../core/permissions.ts'
import { isPlinthError, PlinthError, translateDbError } from '../../shared/errors.ts'
import { assertPasswordPolicy, hashPassword } from './passwords.ts'
import { normalizeEmail } from './secrets.ts'

/**
 * Creates a user directly (the CLI and the first-start bootstrap); the HTTP API goes through the
 * account service instead. Records and emits `user:created` with a system actor. A taken address (even one
 * taken concurrently) is PLINTH_USER_EXISTS.
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
  const passwordHash = await hashPassword(input.password)
  let event: SecurityEventInput
  try {
    event = await ctx.db.kysely.transaction().execute(async (trx) => {
      const row = await trx
        .insertInto('users')
        .values({
          email: input.email.trim(),
          email_normalized: email,
          password_hash: passwordHash,
          role: input.role,
          password_changed_at: new Date(),
        })
        .returning('id')
        .executeTakeFirstOrThrow()
      const event: SecurityEventInput = {
        type: 'user:created',
        outcome: 'success',
        actor: { type: 'system' },
        target: { type: 'user', id: row.id },
        details: { role: input.role },
      }
      await ctx.audit.record(trx, auditEntryOf(event))
      return event
    })
  } catch (err) {
    // Another process inserted the same address between the check and the insert.
    if (translateDbError(err)?.code === 'PLINTH_DB_CONFLICT')
      throw new PlinthError('PLINTH_USER_EXISTS', undefined, { cause: err })
    throw err
  }
  ctx.securityEvents.emit(event)
  return event.target!.id
}

/**
 * With PLINTH_ADMIN_EMAIL and PLINTH_ADMIN_PASSWORD(_FILE) set and no administrator yet, creates one.
 * An existing account with that address is never promoted (whoever signed up with it may not be
 * the operator): the start goes on with a warning. A password the policy refuses stops the start.
 */
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
  try {
    const id = await createUserDirect(ctx, { email: adminEmail, password: adminPassword, role: 'admin' })
    ctx.logger.info(
      { userId: id, email: adminEmail },
      'created the first administrator from PLINTH_ADMIN_EMAIL',
    )
  } catch (err) {
    if (!isPlinthError(err)) throw err
    if (err.code === 'PLINTH_AUTH_WEAK_PASSWORD')
      throw new PlinthError('PLINTH_AUTH_WEAK_PASSWORD', `PLINTH_ADMIN_PASSWORD: ${err.message}`, {
        cause: err,
      })
    if (err.code !== 'PLINTH_USER_EXISTS') throw err
    const user = await ctx.db.kysely
      .selectFrom('users')
      .select(['id', 'role'])
      .where('email_normalized', '=', normalizeEmail(adminEmail))
      .executeTakeFirst()
    // Another replica starting at the same moment created it: nothing left to do.
    if (user?.role === 'admin') return
    ctx.logger.warn(
      { userId: user?.id, email: adminEmail },
      'PLINTH_ADMIN_EMAIL belongs to an existing account that is not an administrator; it was not promoted: create an administrator with "plinth user create --admin --email …"',
    )
  }
}
