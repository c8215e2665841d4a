import { type Kysely, sql } from 'kysely'

/**
 * The erasures the audit log records (`user:erased` rows), indexed by themselves: every start
 * (the backup tombstones' sync), every erasure and `verify` read them, and without this index each
 * read scanned the whole log — a start's cost grew with the log's age. Partial: erasures are rare,
 * so the index stays a few pages however long the log grows.
 */
export default {
  // biome-ignore lint/suspicious/noExplicitAny: migrations are independent of the current table types
  async up(db: Kysely<any>) {
    await sql`create index audit_log_erased_idx on audit_log (target_id, at) where action = 'user:erased'`.execute(
      db,
    )
  },
  // biome-ignore lint/suspicious/noExplicitAny: see above
  async down(db: Kysely<any>) {
    await sql`drop index audit_log_erased_idx`.execute(db)
  },
}
