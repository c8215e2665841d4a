import { type Kysely, sql } from 'kysely'

/**
 * Canary rows (`backup_canaries`, migration 0025): written by drills and PITR verifications into the
 * live database, looked for in a restored copy. The newest 100 are kept.
 */
// biome-ignore lint/suspicious/noExplicitAny: only raw SQL runs on it
export async function hasCanaries(db: Kysely<any>): Promise<boolean> {
  const { rows } = await sql<{ t: string | null }>`select to_regclass('backup_canaries')::text as t`.execute(
    db,
  )
  return rows[0]?.t != null
}

/** Writes a canary and returns its commit time (the database's clock, as the rows recovered carry it). */
// biome-ignore lint/suspicious/noExplicitAny: only raw SQL runs on it
export async function writeCanary(db: Kysely<any>, drill: string): Promise<Date> {
  const { rows } = await sql<{ written_at: Date }>`
    insert into backup_canaries (drill) values (${drill}) returning written_at`.execute(db)
  // The newest 100 are plenty for any drill: older ones go.
  await sql`delete from backup_canaries where id not in (
    select id from backup_canaries order by id desc limit 100)`.execute(db)
  return new Date(rows[0]!.written_at)
}

// biome-ignore lint/suspicious/noExplicitAny: only raw SQL runs on it
export async function newestCanary(db: Kysely<any>): Promise<{ at: Date | null; count: number }> {
  if (!(await hasCanaries(db))) return { at: null, count: 0 }
  const { rows } = await sql<{ at: Date | null; n: string | number }>`
    select max(written_at) as at, count(*) as n from backup_canaries`.execute(db)
  return { at: rows[0]?.at ? new Date(rows[0].at) : null, count: Number(rows[0]?.n ?? 0) }
}

/** How many canaries of one drill or verification (`drill` column) a database holds. */
// biome-ignore lint/suspicious/noExplicitAny: only raw SQL runs on it
export async function canariesOf(db: Kysely<any>, drill: string): Promise<number> {
  if (!(await hasCanaries(db))) return 0
  const { rows } = await sql<{ n: number }>`
    select count(*)::int as n from backup_canaries where drill = ${drill}`.execute(db)
  return rows[0]?.n ?? 0
}

/**
 * The canaries' commit times (UTC, to the microsecond, as text: exact to compare), oldest first;
 * `upTo` (a time PostgreSQL reads) and `from` (one of these texts) bound them, inclusive.
 */
export async function canaryTimes(
  // biome-ignore lint/suspicious/noExplicitAny: only raw SQL runs on it
  db: Kysely<any>,
  range: { upTo?: string | undefined; from?: string | undefined } = {},
): Promise<string[]> {
  if (!(await hasCanaries(db))) return []
  const { rows } = await sql<{ t: string }>`
    select to_char(written_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as t
      from backup_canaries
     where (${range.upTo ?? null}::timestamptz is null or written_at <= ${range.upTo ?? null}::timestamptz)
       and (${range.from ?? null}::timestamptz is null or written_at >= ${range.from ?? null}::timestamptz)
     order by written_at`.execute(db)
  return rows.map((r) => r.t)
}
