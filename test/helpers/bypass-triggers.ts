import { type Kysely, sql } from 'kysely'
import type { PlinthTables } from '../../src/infra/db/tables.ts'

/** Runs `fn` on one connection with triggers off, as someone who bypasses the database's refusal would. */
export async function bypassingTriggers(
  db: Kysely<PlinthTables>,
  fn: (trx: Kysely<PlinthTables>) => Promise<unknown>,
): Promise<void> {
  await db.transaction().execute(async (trx) => {
    await sql`set local session_replication_role = replica`.execute(trx)
    await fn(trx)
  })
}
