import { type Kysely, sql } from 'kysely'

/**
 * `files`: one row per stored object. `(owner, sha256)` is unique: uploading the same bytes twice
 * returns the existing file instead of storing a second copy (de-duplication per owner).
 */
export default {
  // biome-ignore lint/suspicious/noExplicitAny: migrations are independent of the current table types
  async up(db: Kysely<any>) {
    await db.schema
      .createTable('files')
      .addColumn('id', 'uuid', (c) => c.primaryKey())
      .addColumn('owner', 'text', (c) => c.notNull())
      .addColumn('sha256', 'text', (c) => c.notNull().check(sql`sha256 ~ '^[0-9a-f]{64}$'`))
      .addColumn('size', 'bigint', (c) => c.notNull().check(sql`size >= 0`))
      .addColumn('type', 'text', (c) => c.notNull())
      .addColumn('name', 'text', (c) => c.notNull())
      .addColumn('visibility', 'text', (c) =>
        c.notNull().defaultTo('private').check(sql`visibility in ('private', 'public')`),
      )
      .addColumn('purpose', 'text', (c) => c.notNull())
      .addColumn('metadata', 'jsonb', (c) => c.notNull().defaultTo(sql`'{}'::jsonb`))
      .addColumn('width', 'integer')
      .addColumn('height', 'integer')
      .addColumn('created', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
      .addUniqueConstraint('files_owner_sha256_key', ['owner', 'sha256'])
      .execute()
    await db.schema
      .createIndex('files_owner_created_idx')
      .on('files')
      .columns(['owner', 'created', 'id'])
      .execute()
  },
  // biome-ignore lint/suspicious/noExplicitAny: see above
  async down(db: Kysely<any>) {
    await db.schema.dropTable('files').execute()
  },
}
