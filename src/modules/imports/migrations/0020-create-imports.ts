import { type Kysely, sql } from 'kysely'

/**
 * Imports: `import_checkpoints` (one per file, dataset and mode: how far it was read, what it did),
 * `import_seen_keys` (the keys a file already gave, to refuse duplicates inside it in bounded
 * memory), `import_rejections` (every rejected row with its line and reason) and
 * `migration_records` (what `plinth import pocketbase|supabase` brought over).
 */
export default {
  // biome-ignore lint/suspicious/noExplicitAny: migrations are independent of the current table types
  async up(db: Kysely<any>) {
    await db.schema
      .createTable('import_checkpoints')
      .addColumn('id', 'uuid', (c) => c.primaryKey().defaultTo(sql`gen_random_uuid()`))
      .addColumn('module', 'text', (c) => c.notNull())
      .addColumn('dataset', 'text', (c) => c.notNull())
      .addColumn('file', 'text', (c) => c.notNull())
      .addColumn('dry_run', 'boolean', (c) => c.notNull())
      .addColumn('format', 'text', (c) => c.notNull())
      .addColumn('file_size', 'bigint', (c) => c.notNull())
      .addColumn('file_mtime_ms', 'double precision', (c) => c.notNull())
      .addColumn('file_head_sha256', 'text', (c) => c.notNull())
      .addColumn('header', 'jsonb')
      .addColumn('byte_offset', 'bigint', (c) => c.notNull().defaultTo(0))
      .addColumn('line', 'bigint', (c) => c.notNull().defaultTo(0))
      .addColumn('rows', 'bigint', (c) => c.notNull().defaultTo(0))
      .addColumn('inserted', 'bigint', (c) => c.notNull().defaultTo(0))
      .addColumn('updated', 'bigint', (c) => c.notNull().defaultTo(0))
      .addColumn('unchanged', 'bigint', (c) => c.notNull().defaultTo(0))
      .addColumn('rejected', 'bigint', (c) => c.notNull().defaultTo(0))
      .addColumn('status', 'text', (c) => c.notNull().check(sql`status in ('running', 'complete', 'failed')`))
      .addColumn('error', 'text')
      .addColumn('started_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
      .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
      .addUniqueConstraint('import_checkpoints_file_key', ['module', 'dataset', 'file', 'dry_run'])
      .execute()
    // No foreign key: its check (a trigger per row, and a lock on the checkpoint each) cost more
    // than the rest of a batch; the engine deletes a checkpoint's keys itself.
    await db.schema
      .createTable('import_seen_keys')
      .addColumn('checkpoint_id', 'uuid', (c) => c.notNull())
      .addColumn('key_hash', 'bigint', (c) => c.notNull())
      .addColumn('line', 'bigint', (c) => c.notNull())
      .addPrimaryKeyConstraint('import_seen_keys_pkey', ['checkpoint_id', 'key_hash'])
      .execute()
    await db.schema
      .createTable('import_rejections')
      .addColumn('checkpoint_id', 'uuid', (c) =>
        c.notNull().references('import_checkpoints.id').onDelete('cascade'),
      )
      .addColumn('line', 'bigint', (c) => c.notNull())
      .addColumn('reason', 'text', (c) => c.notNull())
      .addPrimaryKeyConstraint('import_rejections_pkey', ['checkpoint_id', 'line'])
      .execute()
    await db.schema
      .createTable('migration_records')
      .addColumn('source', 'text', (c) => c.notNull())
      .addColumn('collection', 'text', (c) => c.notNull())
      .addColumn('external_id', 'text', (c) => c.notNull())
      .addColumn('user_id', 'uuid', (c) => c.references('users.id').onDelete('cascade'))
      .addColumn('data', 'jsonb', (c) => c.notNull())
      .addColumn('imported_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
      .addPrimaryKeyConstraint('migration_records_pkey', ['source', 'collection', 'external_id'])
      .execute()
    await db.schema
      .createIndex('migration_records_user_idx')
      .on('migration_records')
      .column('user_id')
      .execute()
  },
  // biome-ignore lint/suspicious/noExplicitAny: see above
  async down(db: Kysely<any>) {
    await db.schema.dropTable('migration_records').execute()
    await db.schema.dropTable('import_rejections').execute()
    await db.schema.dropTable('import_seen_keys').execute()
    await db.schema.dropTable('import_checkpoints').execute()
  },
}
