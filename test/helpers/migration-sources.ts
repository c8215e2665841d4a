/**
 * Builds the databases `plinth import pocketbase|supabase` reads, with the schemas those systems
 * use: PocketBase v0.23+ (`_collections` with `fields`, auth collections as tables with `password`,
 * `tokenKey`, `email`, `emailVisibility`, `verified`, `created`, `updated`; `_superusers`;
 * `_externalAuths` for OAuth2 links) and Supabase's GoTrue `auth.users`.
 */
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { DatabaseSync } from 'node:sqlite'
import bcrypt from 'bcryptjs'
import pg from 'pg'

/** A bcrypt hash as Go's golang.org/x/crypto/bcrypt writes it (PocketBase, GoTrue): `$2a$`, cost 10. */
export function goBcrypt(password: string): string {
  return bcrypt.hashSync(password, bcrypt.genSaltSync(10)).replace(/^\$2b\$/, '$2a$')
}

const RECORD_TABLE = (name: string, extra = '') => `
  CREATE TABLE "${name}" (
    "id" TEXT PRIMARY KEY DEFAULT ('r'||lower(hex(randomblob(7)))) NOT NULL,
    "password" TEXT DEFAULT '' NOT NULL,
    "tokenKey" TEXT DEFAULT '' NOT NULL,
    "email" TEXT DEFAULT '' NOT NULL,
    "emailVisibility" BOOLEAN DEFAULT FALSE NOT NULL,
    "verified" BOOLEAN DEFAULT FALSE NOT NULL,
    ${extra}
    "created" TEXT DEFAULT (strftime('%Y-%m-%d %H:%M:%fZ')) NOT NULL,
    "updated" TEXT DEFAULT (strftime('%Y-%m-%d %H:%M:%fZ')) NOT NULL
  )`

export interface PbUser {
  id: string
  email: string
  password?: string
  hash?: string
  verified?: boolean
  created?: string
  oauth?: string
}

/** A `pb_data` directory whose data.db holds `users` (auth), `_superusers`, `_externalAuths` and a `posts` collection. */
export function createPocketBaseData(
  dir: string,
  users: readonly PbUser[],
  posts: readonly { id: string; title: string; author: string }[],
) {
  mkdirSync(dir, { recursive: true })
  const db = new DatabaseSync(join(dir, 'data.db'))
  db.exec(`
    CREATE TABLE "_collections" (
      "id" TEXT PRIMARY KEY DEFAULT ('r'||lower(hex(randomblob(7)))) NOT NULL,
      "system" BOOLEAN DEFAULT FALSE NOT NULL,
      "type" TEXT DEFAULT 'base' NOT NULL,
      "name" TEXT UNIQUE NOT NULL,
      "fields" JSON DEFAULT '[]' NOT NULL,
      "indexes" JSON DEFAULT '[]' NOT NULL,
      "listRule" TEXT DEFAULT NULL,
      "viewRule" TEXT DEFAULT NULL,
      "createRule" TEXT DEFAULT NULL,
      "updateRule" TEXT DEFAULT NULL,
      "deleteRule" TEXT DEFAULT NULL,
      "options" JSON DEFAULT '{}' NOT NULL,
      "created" TEXT DEFAULT (strftime('%Y-%m-%d %H:%M:%fZ')) NOT NULL,
      "updated" TEXT DEFAULT (strftime('%Y-%m-%d %H:%M:%fZ')) NOT NULL
    );
    ${RECORD_TABLE('_superusers')};
    ${RECORD_TABLE('users', `"name" TEXT DEFAULT '' NOT NULL, "avatar" TEXT DEFAULT '' NOT NULL,`)};
    CREATE TABLE "_externalAuths" (
      "id" TEXT PRIMARY KEY DEFAULT ('r'||lower(hex(randomblob(7)))) NOT NULL,
      "collectionRef" TEXT DEFAULT '' NOT NULL,
      "recordRef" TEXT DEFAULT '' NOT NULL,
      "provider" TEXT DEFAULT '' NOT NULL,
      "providerId" TEXT DEFAULT '' NOT NULL,
      "created" TEXT DEFAULT (strftime('%Y-%m-%d %H:%M:%fZ')) NOT NULL,
      "updated" TEXT DEFAULT (strftime('%Y-%m-%d %H:%M:%fZ')) NOT NULL
    );
    CREATE TABLE "posts" (
      "id" TEXT PRIMARY KEY DEFAULT ('r'||lower(hex(randomblob(7)))) NOT NULL,
      "title" TEXT DEFAULT '' NOT NULL,
      "author" TEXT DEFAULT '' NOT NULL,
      "created" TEXT DEFAULT (strftime('%Y-%m-%d %H:%M:%fZ')) NOT NULL,
      "updated" TEXT DEFAULT (strftime('%Y-%m-%d %H:%M:%fZ')) NOT NULL
    );
  `)
  const collection = db.prepare('INSERT INTO _collections (id, system, type, name) VALUES (?, ?, ?, ?)')
  collection.run('pbc_3142635823', 1, 'auth', '_superusers')
  collection.run('_pb_users_auth_', 0, 'auth', 'users')
  collection.run('pbc_2281828961', 1, 'base', '_externalAuths')
  collection.run('pbc_1125843985', 0, 'base', 'posts')
  db.prepare('INSERT INTO _superusers (id, email, password, tokenKey, verified) VALUES (?, ?, ?, ?, 1)').run(
    'su0000000000001',
    'root@pocketbase.example',
    goBcrypt('superuser-password-1'),
    'tk-root',
  )
  const insert = db.prepare(
    'INSERT INTO users (id, email, password, tokenKey, verified, name, created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
  )
  for (const u of users) {
    const created = u.created ?? '2024-03-01 09:30:00.123Z'
    insert.run(
      u.id,
      u.email,
      u.hash ?? (u.password ? goBcrypt(u.password) : ''),
      `tk-${u.id}`,
      u.verified ? 1 : 0,
      u.id,
      created,
      created,
    )
    if (u.oauth)
      db.prepare(
        'INSERT INTO _externalAuths (collectionRef, recordRef, provider, providerId) VALUES (?, ?, ?, ?)',
      ).run('_pb_users_auth_', u.id, u.oauth, `p-${u.id}`)
  }
  const post = db.prepare('INSERT INTO posts (id, title, author) VALUES (?, ?, ?)')
  for (const p of posts) post.run(p.id, p.title, p.author)
  db.close()
}

export interface SupabaseUser {
  email: string | null
  password?: string
  providers?: string[]
  confirmed?: boolean
  deleted?: boolean
  phone?: string
}

/** Supabase's `auth.users` (the GoTrue columns Plinth reads, and the ones around them) in the database at `url`. */
export async function createSupabaseAuth(url: string, users: readonly SupabaseUser[]): Promise<string[]> {
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  try {
    await client.query(`
      create schema auth;
      create table auth.users (
        instance_id uuid null,
        id uuid not null primary key,
        aud varchar(255) null,
        role varchar(255) null,
        email varchar(255) null,
        encrypted_password varchar(255) null,
        email_confirmed_at timestamptz null,
        invited_at timestamptz null,
        confirmation_token varchar(255) null,
        confirmation_sent_at timestamptz null,
        recovery_token varchar(255) null,
        recovery_sent_at timestamptz null,
        email_change_token_new varchar(255) null,
        email_change varchar(255) null,
        email_change_sent_at timestamptz null,
        last_sign_in_at timestamptz null,
        raw_app_meta_data jsonb null,
        raw_user_meta_data jsonb null,
        is_super_admin bool null,
        created_at timestamptz null,
        updated_at timestamptz null,
        phone text null unique default null,
        phone_confirmed_at timestamptz null,
        banned_until timestamptz null,
        is_sso_user boolean not null default false,
        deleted_at timestamptz null,
        is_anonymous boolean not null default false
      );`)
    const ids: string[] = []
    for (const [i, u] of users.entries()) {
      const id = `00000000-0000-4000-8000-${String(i + 1).padStart(12, '0')}`
      ids.push(id)
      const providers = u.providers ?? ['email']
      await client.query(
        `insert into auth.users (instance_id, id, aud, role, email, encrypted_password, email_confirmed_at,
           raw_app_meta_data, raw_user_meta_data, created_at, updated_at, phone, deleted_at)
         values ('00000000-0000-0000-0000-000000000000', $1, 'authenticated', 'authenticated', $2, $3, $4,
           $5, '{}', '2023-11-20T08:00:00Z', now(), $6, $7)`,
        [
          id,
          u.email,
          u.password ? goBcrypt(u.password) : '',
          u.confirmed === false ? null : '2023-11-20T08:05:00Z',
          JSON.stringify({ provider: providers[0], providers }),
          u.phone ?? null,
          u.deleted ? '2024-01-01T00:00:00Z' : null,
        ],
      )
    }
    return ids
  } finally {
    await client.end()
  }
}
