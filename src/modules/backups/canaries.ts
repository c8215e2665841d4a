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
