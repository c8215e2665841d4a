import { type Kysely, sql } from 'kysely'

/**
 * Erasure of personal data in the audit log (docs/decisions/0010-privacy-erasure.md). Rows sealed
 * from now on commit to their erasable fields (actor id, target id, IP, user agent, details,
 * changes) through a per-row `salt` (hash v2); erasure may then replace those fields with a
 * pseudonym or nothing, dropping the salt for an `erasure` record, and the row still verifies. The
 * guard gains exactly that exception, inside a transaction that set `plinth.audit_erase`:
 * - the chain fields and every non-personal column stay as they are;
 * - the actor and target ids stay, or become NULL or an `erased:` pseudonym; IP and user agent
 *   stay or become NULL; details and changes may be rewritten (their commitment is kept);
 * - a sealed row must give up its salt for an erasure record; an unsealed row gets neither (it is
 *   sealed afterwards, over the pseudonymised values).
 * Sealing may now also set the salt. Rows sealed before stay hash v1.
 */
export default {
  // biome-ignore lint/suspicious/noExplicitAny: migrations are independent of the current table types
  async up(db: Kysely<any>) {
    await db.schema.alterTable('audit_log').addColumn('salt', 'text').execute()
    await db.schema.alterTable('audit_log').addColumn('erasure', 'jsonb').execute()
    await sql`create or replace function plinth_audit_log_guard() returns trigger language plpgsql as $$
      begin
        if tg_op = 'UPDATE' and old.seq is null and new.seq is not null
          and old.salt is null and old.erasure is null and new.erasure is null
          and (new.id, new.at, new.actor_type, new.actor_id, new.actor_token_id, new.action,
               new.target_type, new.target_id, new.outcome, new.ip, new.user_agent, new.request_id,
               new.details, new.changes)
          is not distinct from
              (old.id, old.at, old.actor_type, old.actor_id, old.actor_token_id, old.action,
               old.target_type, old.target_id, old.outcome, old.ip, old.user_agent, old.request_id,
               old.details, old.changes)
        then
          return new;
        end if;
        if tg_op = 'UPDATE' and coalesce(current_setting('plinth.audit_erase', true), '') = 'on'
          and (new.id, new.seq, new.prev_hash, new.hash, new.at, new.actor_type, new.actor_token_id,
               new.action, new.target_type, new.outcome, new.request_id)
          is not distinct from
              (old.id, old.seq, old.prev_hash, old.hash, old.at, old.actor_type, old.actor_token_id,
               old.action, old.target_type, old.outcome, old.request_id)
          and (new.actor_id is not distinct from old.actor_id or new.actor_id is null
               or new.actor_id like 'erased:%')
          and (new.target_id is not distinct from old.target_id or new.target_id is null
               or new.target_id like 'erased:%')
          and (new.ip is not distinct from old.ip or new.ip is null)
          and (new.user_agent is not distinct from old.user_agent or new.user_agent is null)
          and new.salt is null
          and ((old.seq is null and old.erasure is null and new.erasure is null)
               or (old.seq is not null and new.erasure is not null))
        then
          return new;
        end if;
        if tg_op = 'DELETE' and old.seq is not null
          and coalesce(current_setting('plinth.audit_prune', true), '') = 'on' then
          return old;
        end if;
        raise exception 'audit_log is append-only: % refused (only sealing, erasure and retention pruning change it)', tg_op
          using errcode = '42501';
      end $$`.execute(db)
  },
  // biome-ignore lint/suspicious/noExplicitAny: see above
  async down(db: Kysely<any>) {
    // The previous version verifies hash v1 only: it would take every row sealed since for a forgery.
    const { rows } = await sql<{ n: string }>`select count(*) as n from audit_log
      where salt is not null or erasure is not null`.execute(db)
    if (Number(rows[0]?.n ?? 0) > 0)
      throw new Error(
        `${rows[0]!.n} audit row(s) are sealed with hash v2 or pseudonymised, which the previous version cannot verify; restore a backup taken before migration 0010 instead (docs/operations/migrations.md)`,
      )
    await sql`create or replace function plinth_audit_log_guard() returns trigger language plpgsql as $$
      begin
        if tg_op = 'UPDATE' and old.seq is null and new.seq is not null
          and (new.id, new.at, new.actor_type, new.actor_id, new.actor_token_id, new.action,
               new.target_type, new.target_id, new.outcome, new.ip, new.user_agent, new.request_id,
               new.details, new.changes)
          is not distinct from
              (old.id, old.at, old.actor_type, old.actor_id, old.actor_token_id, old.action,
               old.target_type, old.target_id, old.outcome, old.ip, old.user_agent, old.request_id,
               old.details, old.changes)
        then
          return new;
        end if;
        if tg_op = 'DELETE' and old.seq is not null
          and coalesce(current_setting('plinth.audit_prune', true), '') = 'on' then
          return old;
        end if;
        raise exception 'audit_log is append-only: % refused (only sealing and retention pruning change it)', tg_op
          using errcode = '42501';
      end $$`.execute(db)
    await db.schema.alterTable('audit_log').dropColumn('erasure').execute()
    await db.schema.alterTable('audit_log').dropColumn('salt').execute()
  },
}
