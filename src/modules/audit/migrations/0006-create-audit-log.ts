import { type Kysely, sql } from 'kysely'

/**
 * The audit log and its retention checkpoints. Rows are inserted unsealed in the transaction of
 * the change they record; the sealer then sets `seq`, `prev_hash` and `hash` once (the hash chain,
 * docs/decisions/0007-audit-hash-chain.md). The database itself refuses every other change:
 * - UPDATE only as that one sealing step (chain fields from null to set, every other column equal);
 * - DELETE only of sealed rows, inside a transaction that set `plinth.audit_prune` (retention
 *   pruning, which writes a checkpoint in the same transaction);
 * - TRUNCATE never; checkpoints are never changed or deleted.
 */
export default {
  // biome-ignore lint/suspicious/noExplicitAny: migrations are independent of the current table types
  async up(db: Kysely<any>) {
    await db.schema
      .createTable('audit_log')
      .addColumn('id', 'bigint', (c) => c.generatedAlwaysAsIdentity().primaryKey())
      .addColumn('seq', 'bigint')
      .addColumn('at', 'timestamptz', (c) => c.notNull())
      .addColumn('actor_type', 'text', (c) =>
        c.notNull().check(sql`actor_type in ('user', 'token', 'system', 'anonymous')`),
      )
      .addColumn('actor_id', 'text')
      .addColumn('actor_token_id', 'text')
      .addColumn('action', 'text', (c) =>
        c.notNull().check(sql`action ~ '^[a-z][a-z0-9_-]{0,63}:[a-z][a-z0-9_-]{0,63}$'`),
      )
      .addColumn('target_type', 'text')
      .addColumn('target_id', 'text')
      .addColumn('outcome', 'text', (c) => c.notNull().check(sql`outcome in ('success', 'failure')`))
      .addColumn('ip', 'text')
      .addColumn('user_agent', 'text')
      .addColumn('request_id', 'text')
      .addColumn('details', 'jsonb')
      .addColumn('changes', 'jsonb')
      .addColumn('prev_hash', 'text')
      .addColumn('hash', 'text')
      .addCheckConstraint(
        'audit_log_sealed_check',
        sql`(seq is null) = (hash is null) and (seq is null) = (prev_hash is null)`,
      )
      .execute()
    await sql`create unique index audit_log_seq_idx on audit_log (seq) where seq is not null`.execute(db)
    await sql`create index audit_log_unsealed_idx on audit_log (id) where seq is null`.execute(db)
    // Rows arrive in time order: a BRIN index serves time ranges at a fraction of a B-tree's upkeep.
    await db.schema.createIndex('audit_log_at_idx').on('audit_log').using('brin').column('at').execute()

    await db.schema
      .createTable('audit_checkpoints')
      .addColumn('id', 'bigint', (c) => c.generatedAlwaysAsIdentity().primaryKey())
      .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
      .addColumn('pruned_before', 'timestamptz', (c) => c.notNull())
      .addColumn('last_seq', 'bigint', (c) => c.notNull())
      .addColumn('last_hash', 'text', (c) => c.notNull())
      .addColumn('last_at', 'timestamptz', (c) => c.notNull())
      .addColumn('rows_pruned', 'bigint', (c) => c.notNull())
      .execute()

    await sql`create function plinth_audit_log_guard() returns trigger language plpgsql as $$
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
    await sql`create function plinth_audit_refuse() returns trigger language plpgsql as $$
      begin
        raise exception '% on % refused: the audit log is append-only', tg_op, tg_table_name
          using errcode = '42501';
      end $$`.execute(db)
    await sql`create trigger audit_log_guard before update or delete on audit_log
      for each row execute function plinth_audit_log_guard()`.execute(db)
    await sql`create trigger audit_log_no_truncate before truncate on audit_log
      for each statement execute function plinth_audit_refuse()`.execute(db)
    await sql`create trigger audit_checkpoints_guard before update or delete on audit_checkpoints
      for each row execute function plinth_audit_refuse()`.execute(db)
    await sql`create trigger audit_checkpoints_no_truncate before truncate on audit_checkpoints
      for each statement execute function plinth_audit_refuse()`.execute(db)
  },
  // biome-ignore lint/suspicious/noExplicitAny: see above
  async down(db: Kysely<any>) {
    await db.schema.dropTable('audit_checkpoints').execute()
    await db.schema.dropTable('audit_log').execute()
    await sql`drop function plinth_audit_refuse()`.execute(db)
    await sql`drop function plinth_audit_log_guard()`.execute(db)
  },
}
