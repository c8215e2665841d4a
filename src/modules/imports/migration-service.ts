/**
 * Moving from PocketBase or Supabase: their users become Plinth accounts that keep their bcrypt
 * password hashes (checked, then replaced by argon2id, at the next sign-in), and PocketBase records
 * of chosen collections land in `migration_records`. Each person is one transaction (the account
 * and its `migration_records` row); a dry run does exactly the same work and rolls each back, so
 * its report is the real run's. PocketBase layout followed: v0.23+ (docs/guides/import-and-migrate.md).
 */
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import type { Kysely } from 'kysely'
import { sql } from 'kysely'
import pg from 'pg'
import type { Logger } from 'pino'
import type { Audit, AuditCaller } from '../../core/audit.ts'
import type { UserDirectory } from '../../core/identity.ts'
import type { PlinthTables } from '../../infra/db/tables.ts'
import { PlinthError } from '../../shared/errors.ts'

export type MigrationSource = 'pocketbase' | 'supabase'

/** One person of the source, and what became of them. */
export interface MigratedUser {
  readonly externalId: string
  readonly collection: string
  readonly email: string | null
  /**
   * `created`: a new account with the old password; `unchanged`: brought over by an earlier run;
   * `exists`: an account with this address was already there (left alone, not linked);
   * `skipped`: cannot come over (see `reason`).
   */
  readonly outcome: 'created' | 'unchanged' | 'exists' | 'skipped'
  readonly reason?: string | undefined
  /** Signed in through an OAuth2 provider too (that link does not come over). */
  readonly oauthProviders?: readonly string[] | undefined
  readonly verified: boolean
}

export interface MigrationReport {
  readonly source: MigrationSource
  readonly dryRun: boolean
  readonly users: {
    readonly created: number
    readonly unchanged: number
    readonly exists: number
    readonly skipped: number
    readonly list: readonly MigratedUser[]
  }
  /** Per PocketBase collection brought as records. */
  readonly records: Readonly<Record<string, { inserted: number; updated: number; unchanged: number }>>
  /** Every user either came over or was already there, and every record was read. */
  readonly ok: boolean
}

interface SourceUser {
  readonly externalId: string
  readonly collection: string
  readonly email: string | null
  readonly passwordHash: string | null
  readonly verified: boolean
  readonly createdAt: Date | undefined
  /** Why it cannot come over, decided by the source's own rules. */
  readonly cannot?: string | undefined
  readonly oauthProviders: readonly string[]
  readonly data: Record<string, unknown>
}

const ROLLBACK = Symbol('dry run')
const SQLITE_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/
const unreadable = (message: string, cause?: unknown) =>
  new PlinthError('PLINTH_IMPORT_SOURCE_UNREADABLE', message, cause ? { cause } : undefined)

/** PocketBase's time format (`2024-05-01 10:00:00.123Z`) as a Date; undefined when it is not one. */
function pbTime(value: unknown): Date | undefined {
  if (typeof value !== 'string' || value === '') return undefined
  const d = new Date(value.replace(' ', 'T'))
  return Number.isNaN(d.getTime()) ? undefined : d
}

export function createMigrationService(deps: {
  db: Kysely<PlinthTables>
  audit: Audit
  logger: Logger
  users: UserDirectory
}) {
  const { db, audit, users } = deps

  /** Brings one person over in one transaction (rolled back under dry run). */
  async function migrateUser(source: MigrationSource, u: SourceUser, dryRun: boolean): Promise<MigratedUser> {
    const base = {
      externalId: u.externalId,
      collection: u.collection,
      email: u.email,
      verified: u.verified,
      ...(u.oauthProviders.length > 0 ? { oauthProviders: u.oauthProviders } : {}),
    }
    if (u.cannot) return { ...base, outcome: 'skipped', reason: u.cannot }
    if (!u.email)
      return { ...base, outcome: 'skipped', reason: 'no e-mail address (Plinth signs people in by e-mail)' }
    let result: MigratedUser | undefined
    try {
      await db.transaction().execute(async (trx) => {
        const already = await trx
          .selectFrom('migration_records')
          .select('user_id')
          .where('source', '=', source)
          .where('collection', '=', u.collection)
          .where('external_id', '=', u.externalId)
          .executeTakeFirst()
        if (already) {
          result = { ...base, outcome: 'unchanged' }
          return
        }
        const { id, outcome } = await users.importUser(trx, {
          email: u.email!,
          legacyPasswordHash: u.passwordHash,
          createdAt: u.createdAt,
        })
        if (outcome === 'exists') {
          result = {
            ...base,
            outcome: 'exists',
            reason: 'an account with this e-mail address already exists (left as it is)',
          }
          return
        }
        await trx
          .insertInto('migration_records')
          .values({
            source,
            collection: u.collection,
            external_id: u.externalId,
            user_id: id,
            data: JSON.stringify({
              email: u.email,
              verified: u.verified,
              created: u.createdAt ?? null,
              ...u.data,
            }),
          })
          .execute()
        result = { ...base, outcome: 'created' }
        if (dryRun) throw ROLLBACK
      })
    } catch (err) {
      if (err !== ROLLBACK) {
        if (err instanceof PlinthError && err.code === 'PLINTH_IMPORT_UNSUPPORTED_HASH')
          return { ...base, outcome: 'skipped', reason: 'its password hash is not bcrypt' }
        throw err
      }
    }
    return result!
  }

  async function finish(
    source: MigrationSource,
    dryRun: boolean,
    list: MigratedUser[],
    records: MigrationReport['records'],
    caller: AuditCaller,
  ): Promise<MigrationReport> {
    const count = (o: MigratedUser['outcome']) => list.filter((u) => u.outcome === o).length
    const report: MigrationReport = {
      source,
      dryRun,
      users: {
        created: count('created'),
        unchanged: count('unchanged'),
        exists: count('exists'),
        skipped: count('skipped'),
        list,
      },
      records,
      ok: count('skipped') === 0 && count('exists') === 0,
    }
    await audit.record(db, {
      action: dryRun ? 'import:dry-run' : report.ok ? 'import:completed' : 'import:incomplete',
      actor: caller.actor,
      userAgent: caller.userAgent,
      target: { type: 'migration', id: source },
      outcome: report.ok ? 'success' : 'failure',
      details: {
        created: report.users.created,
        unchanged: report.users.unchanged,
        exists: report.users.exists,
        skipped: report.users.skipped,
        records,
      },
    })
    return report
  }

  return {
    /**
     * `plinth import pocketbase <pb_data>`: the users of every auth collection (but `_superusers`)
     * and, for each name in `collections`, that collection's records.
     */
    async pocketbase(options: {
      dir: string
      collections?: readonly string[]
      dryRun?: boolean
      caller: AuditCaller
    }): Promise<MigrationReport> {
      const dryRun = options.dryRun ?? false
      const file = join(options.dir, 'data.db')
      if (!existsSync(file))
        throw unreadable(`${options.dir}: no data.db here (give PocketBase's pb_data directory)`)
      const { DatabaseSync } = await import('node:sqlite')
      let pb: InstanceType<typeof DatabaseSync>
      try {
        pb = new DatabaseSync(file, { readOnly: true })
      } catch (err) {
        throw unreadable(`${file}: cannot be opened as SQLite: ${(err as Error).message}`, err)
      }
      try {
        let collections: { name: string; type: string }[]
        try {
          collections = pb.prepare('select name, type from _collections').all() as typeof collections
        } catch (err) {
          throw unreadable(
            `${file}: not a PocketBase database (${(err as Error).message}); PocketBase v0.23 or later is read`,
            err,
          )
        }
        const auth = collections.filter((c) => c.type === 'auth' && !c.name.startsWith('_'))
        if (auth.length === 0) throw unreadable(`${file}: no auth collection (such as users) to bring over`)
        const hasExternal = collections.some((c) => c.name === '_externalAuths')
        const list: MigratedUser[] = []
        const seen = new Set<string>()
        for (const c of auth) {
          if (!SQLITE_NAME.test(c.name)) throw unreadable(`collection name "${c.name}" is not a plain name`)
          const providers = new Map<string, string[]>()
          if (hasExternal)
            for (const row of pb
              .prepare(
                'select recordRef, provider from _externalAuths where collectionRef = (select id from _collections where name = ?)',
              )
              .all(c.name) as { recordRef: string; provider: string }[])
              providers.set(row.recordRef, [...(providers.get(row.recordRef) ?? []), row.provider])
          for (const row of pb.prepare(`select * from "${c.name}" order by id`).iterate() as Iterable<
            Record<string, unknown>
          >) {
            const email = typeof row.email === 'string' && row.email.trim() !== '' ? row.email.trim() : null
            const key = email?.toLowerCase()
            const duplicate = key !== undefined && seen.has(key)
            if (key) seen.add(key)
            const hash = typeof row.password === 'string' && row.password !== '' ? row.password : null
            list.push(
              await migrateUser(
                'pocketbase',
                {
                  externalId: String(row.id),
                  collection: c.name,
                  email,
                  passwordHash: hash,
                  verified: Boolean(row.verified),
                  createdAt: pbTime(row.created),
                  oauthProviders: providers.get(String(row.id)) ?? [],
                  cannot: duplicate ? 'the same e-mail address as an earlier PocketBase user' : undefined,
                  data: {},
                },
                dryRun,
              ),
            )
          }
        }
        const records: Record<string, { inserted: number; updated: number; unchanged: number }> = {}
        for (const name of options.collections ?? []) {
          const c = collections.find((x) => x.name === name)
          if (!c || !SQLITE_NAME.test(name)) throw unreadable(`${file}: no collection named "${name}"`)
          if (c.type === 'view')
            throw unreadable(`"${name}" is a view collection: its records live in others`)
          const counts = { inserted: 0, updated: 0, unchanged: 0 }
          let batch: Record<string, unknown>[] = []
          const flush = async () => {
            if (batch.length === 0) return
            const rows = batch
            batch = []
            try {
              await db.transaction().execute(async (trx) => {
                const out = await sql<{ inserted: boolean }>`
                  insert into migration_records (source, collection, external_id, data)
                  select 'pocketbase', ${name}, r->>'id', r from jsonb_array_elements(${JSON.stringify(rows)}::jsonb) as r
                  on conflict (source, collection, external_id) do update set data = excluded.data, imported_at = now()
                  where migration_records.data is distinct from excluded.data
                  returning (xmax = 0) as inserted`.execute(trx)
                for (const r of out.rows) r.inserted ? counts.inserted++ : counts.updated++
                counts.unchanged += rows.length - out.rows.length
                if (dryRun) throw ROLLBACK
              })
            } catch (err) {
              if (err !== ROLLBACK) throw err
            }
          }
          for (const row of pb.prepare(`select * from "${name}" order by id`).iterate() as Iterable<
            Record<string, unknown>
          >) {
            batch.push(row)
            if (batch.length >= 500) await flush()
          }
          await flush()
          records[name] = counts
        }
        return await finish('pocketbase', dryRun, list, records, options.caller)
      } finally {
        pb.close()
      }
    },

    /** `plinth import supabase <DATABASE_URL>`: the people of `auth.users` with an e-mail and a password. */
    async supabase(options: {
      url: string
      dryRun?: boolean
      caller: AuditCaller
    }): Promise<MigrationReport> {
      const dryRun = options.dryRun ?? false
      const client = new pg.Client({ connectionString: options.url })
      try {
        await client.connect()
      } catch (err) {
        throw unreadable(`cannot connect to the Supabase database: ${(err as Error).message}`, err)
      }
      try {
        const exists = await client.query(`select to_regclass('auth.users') as t`)
        if (!exists.rows[0]?.t) throw unreadable('the Supabase database has no auth.users table')
        const list: MigratedUser[] = []
        const seen = new Set<string>()
        let after = '00000000-0000-0000-0000-000000000000'
        for (;;) {
          const page = await client.query(
            `select id::text, email, encrypted_password, email_confirmed_at, created_at, raw_app_meta_data,
                    (to_jsonb(u)->>'deleted_at') is not null as deleted,
                    coalesce((to_jsonb(u)->>'is_anonymous')::boolean, false) as anonymous,
                    coalesce((to_jsonb(u)->>'is_sso_user')::boolean, false) as sso
               from auth.users u where id > $1::uuid order by id limit 500`,
            [after],
          )
          if (page.rows.length === 0) break
          for (const row of page.rows as {
            id: string
            email: string | null
            encrypted_password: string | null
            email_confirmed_at: Date | null
            created_at: Date | null
            raw_app_meta_data: { provider?: string; providers?: string[] } | null
            deleted: boolean
            anonymous: boolean
            sso: boolean
          }[]) {
            after = row.id
            const email = row.email?.trim() ? row.email.trim() : null
            const key = email?.toLowerCase()
            const duplicate = key !== undefined && seen.has(key)
            if (key) seen.add(key)
            const providers = (row.raw_app_meta_data?.providers ?? []).filter((p) => p !== 'email')
            const hash = row.encrypted_password?.trim() ? row.encrypted_password : null
            const cannot = row.deleted
              ? 'deleted in Supabase'
              : row.anonymous
                ? 'an anonymous Supabase user'
                : row.sso
                  ? 'signs in through SSO, which Plinth does not offer'
                  : duplicate
                    ? 'the same e-mail address as an earlier Supabase user'
                    : !hash && email
                      ? `OAuth-only (${providers.join(', ') || 'no password'}): no password to carry over`
                      : undefined
            list.push(
              await migrateUser(
                'supabase',
                {
                  externalId: row.id,
                  collection: 'auth.users',
                  email,
                  passwordHash: hash,
                  verified: row.email_confirmed_at !== null,
                  createdAt: row.created_at ?? undefined,
                  oauthProviders: providers,
                  cannot,
                  data: {},
                },
                dryRun,
              ),
            )
          }
        }
        return await finish('supabase', dryRun, list, {}, options.caller)
      } finally {
        await client.end().catch(() => undefined)
      }
    },
  }
}

export type MigrationService = ReturnType<typeof createMigrationService>
