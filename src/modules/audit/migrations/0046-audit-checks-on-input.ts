import { type Kysely, sql } from 'kysely'

/** The action pattern of 0006, as written there: the form `down` restores. */
const BOUNDED_PATTERN = `^[a-z][a-z0-9_-]{0,63}:[a-z][a-z0-9_-]{0,63}$`

/**
 * The same refusals as 0006, at a fraction of their cost per row (issue #11,
 * docs/decisions/0046-audited-write-4.md). Every audited change inserts a row and the sealer then
 * rewrites it, and PostgreSQL 15 checks every check constraint of the table both times:
 *
 * - `actor_type` and `outcome` become enum types, which validate once, on input, instead of two
 *   check constraints rebuilt from their stored text at the start of every insert statement. The
 *   column type changes, so PostgreSQL rewrites the table once, here (the data stays as it was).
 *   A value outside the list is refused with 22P02 (invalid input value for enum) instead of 23514.
 * - The action check keeps its name and refuses exactly what it refused (noun:verb, each part a
 *   lowercase letter then at most 63 of `a-z0-9_-`), but the bounded repeats `{0,63}` are gone from
 *   the pattern: PostgreSQL's regex engine runs that form at ~6 µs per row against ~0.4 µs for the
 *   unbounded one, and the part lengths are checked with `strpos` instead (the pattern allows one
 *   colon and only ASCII, so `strpos` finds the split and `octet_length` counts characters).
 */
export default {
  // biome-ignore lint/suspicious/noExplicitAny: migrations are independent of the current table types
  async up(db: Kysely<any>) {
    await sql`create type plinth_audit_actor_type as enum ('user', 'token', 'system', 'anonymous')`.execute(
      db,
    )
    await sql`create type plinth_audit_outcome as enum ('success', 'failure')`.execute(db)
    await sql`alter table audit_log drop constraint audit_log_actor_type_check, drop constraint audit_log_outcome_check`.execute(
      db,
    )
    // contract: release N-1 sends and reads these two columns as text, which an enum column takes and gives back unchanged (same values, same refusals); one statement, one rewrite
    await sql`alter table audit_log alter column actor_type type plinth_audit_actor_type using actor_type::plinth_audit_actor_type, alter column outcome type plinth_audit_outcome using outcome::plinth_audit_outcome`.execute(
      db,
    )
    await sql`alter table audit_log drop constraint audit_log_action_check, add constraint audit_log_action_check check (
        action ~ '^[a-z][a-z0-9_-]*:[a-z][a-z0-9_-]*$'
        and strpos(action, ':') <= 65
        and octet_length(action) - strpos(action, ':') <= 64)`.execute(db)
  },
  // biome-ignore lint/suspicious/noExplicitAny: see above
  async down(db: Kysely<any>) {
    await sql`alter table audit_log
      drop constraint audit_log_action_check,
      alter column actor_type type text using actor_type::text,
      alter column outcome type text using outcome::text,
      add constraint audit_log_actor_type_check check (actor_type in ('user', 'token', 'system', 'anonymous')),
      add constraint audit_log_outcome_check check (outcome in ('success', 'failure')),
      add constraint audit_log_action_check check (action ~ ${sql.lit(BOUNDED_PATTERN)})`.execute(db)
    await sql`drop type plinth_audit_outcome`.execute(db)
    await sql`drop type plinth_audit_actor_type`.execute(db)
  },
}
