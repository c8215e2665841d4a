import { type Kysely, Kysely as KyselyCtor, PostgresDialect, sql } from 'kysely'
import type pg from 'pg'
import type { AuditChainSummary } from '../../core/audit.ts'
import { MIGRATION_TABLE } from '../../infra/db/migrator.ts'
import type { PlinthTables } from '../../infra/db/tables.ts'

type Db = Kysely<PlinthTables>

/** What a backup records about the database it copied, and what verification compares after a restore. */
export interface DatabaseFacts {
  readonly postgresVersion: string
  readonly migrationHead: string | null
  readonly rowCounts: Record<string, number>
}

const SYSTEM_SCHEMAS = ['pg_catalog', 'information_schema', 'pg_toast']

/** Every ordinary table outside the system schemas, as `schema.table`, sorted. */
export async function listTables(db: Db): Promise<{ schema: string; table: string }[]> {
  const { rows } = await sql<{ schema: string; table: string }>`
    select n.nspname as schema, c.relname as table
      from pg_class c join pg_namespace n on n.oid = c.relnamespace
     where c.relkind in ('r', 'p') and n.nspname <> all(${SYSTEM_SCHEMAS})
       and n.nspname not like 'pg_temp%' and n.nspname not like 'pg_toast%'
     order by 1, 2`.execute(db)
  return rows
}

/** Exact row counts per table (`count(*)`, in whatever snapshot `db` reads). */
export async function countRows(db: Db): Promise<Record<string, number>> {
  const counts: Record<string, number> = {}
  for (const t of await listTables(db)) {
    const { rows } = await sql<{
      n: string
    }>`select count(*)::text as n from ${sql.table(`${t.schema}.${t.table}`)}`.execute(db)
    counts[`${t.schema}.${t.table}`] = Number(rows[0]!.n)
  }
  return counts
}

export async function readFacts(db: Db): Promise<DatabaseFacts> {
  const { rows: v } = await sql<{ server_version: string }>`show server_version`.execute(db)
  const { rows: m } = await sql<{
    t: string | null
  }>`select to_regclass(${MIGRATION_TABLE})::text as t`.execute(db)
  let migrationHead: string | null = null
  if (m[0]?.t) {
    const { rows } = await sql<{
      name: string
    }>`select name from ${sql.table(MIGRATION_TABLE)} order by name desc limit 1`.execute(db)
    migrationHead = rows[0]?.name ?? null
  }
  return { postgresVersion: v[0]!.server_version, migrationHead, rowCounts: await countRows(db) }
}

/** Whether the audit log exists in `db` (a database never migrated has none). */
export async function hasAuditLog(db: Db): Promise<boolean> {
  const { rows } = await sql<{ t: string | null }>`select to_regclass('audit_log')::text as t`.execute(db)
  return Boolean(rows[0]?.t)
}

/** The audit chain of `db` through the audit contract, or null when it has no audit log. */
export async function auditChainOf(
  db: Db,
  audit: { verifyChain(db: Db): Promise<AuditChainSummary> },
): Promise<AuditChainSummary | null> {
  return (await hasAuditLog(db)) ? audit.verifyChain(db) : null
}

/**
 * A Kysely handle over one checked-out client (a snapshot transaction, or the embedded database's
 * only connection, held so that nothing writes between the counts and the dump). Releasing is the
 * caller's business: `destroy()` on it does nothing to the client.
 */
export function kyselyOnClient(client: pg.PoolClient): Db {
  const pool = {
    connect: async () => ({ query: client.query.bind(client), release: () => {} }),
    end: async () => {},
  }
  return new KyselyCtor<PlinthTables>({ dialect: new PostgresDialect({ pool: pool as never }) })
}
