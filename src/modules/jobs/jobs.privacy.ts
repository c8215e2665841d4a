import { type Kysely, sql } from 'kysely'
import type { PersonalDataSubject, PersonalDataTable } from '../../core/privacy.ts'
import type { PlinthTables } from '../../infra/db/tables.ts'
import { JOBS_SCHEMA } from './job-store.ts'

const JOB_TABLE = `${JOBS_SCHEMA}.job`
const escapeLike = (s: string) => s.replace(/[\\%_]/g, '\\$&')

/**
 * Jobs whose payload or result names the person (their id, or their address as JSON text). Job
 * types are free to carry anything, so the engine's table is searched rather than declared column
 * by column.
 */
function naming(subject: PersonalDataSubject) {
  const id = `%${escapeLike(subject.userId)}%`
  const email = `%${escapeLike(JSON.stringify(subject.email).slice(1, -1))}%`
  return sql`(data::text like ${id} or data::text ilike ${email}
    or output::text like ${id} or output::text ilike ${email})`
}

async function engineInstalled(db: Kysely<PlinthTables>): Promise<boolean> {
  const { rows } = await sql<{ t: string | null }>`select to_regclass(${JOB_TABLE})::text as t`.execute(db)
  return rows[0]?.t != null
}

/** Schedules name who created them; the engine's jobs may carry the person in their payloads. */
export const jobsPersonalData: readonly PersonalDataTable[] = [
  {
    table: 'job_schedules',
    description: 'Cron schedules you created (they stay, without your name)',
    match: { column: 'created_by', holds: 'user-id' },
    columns: [{ name: 'created_by', export: 'value' }],
    context: ['id', 'job_name', 'cron', 'timezone', 'description', 'paused', 'created_at', 'updated_at'],
    erase: { action: 'set-null' },
  },
  {
    table: JOB_TABLE,
    description: 'Background jobs whose payload or result names you',
    match: { custom: 'the job payload (data) or result (output) contains the user id or the e-mail address' },
    columns: [
      { name: 'data', export: 'value' },
      { name: 'output', export: 'value' },
    ],
    context: ['id', 'name', 'state', 'created_on', 'completed_on'],
    async exportRows(db, subject) {
      if (!(await engineInstalled(db))) return []
      const { rows } = await sql<Record<string, unknown>>`select id, name, state, created_on, completed_on,
        data, output from ${sql.table(JOB_TABLE)} where ${naming(subject)} order by created_on`.execute(db)
      return rows
    },
    erase: {
      action: 'custom',
      describe: 'deleted, whatever their state: a job acting for an erased person has nothing left to do',
      async run(trx, subject) {
        if (!(await engineInstalled(trx))) return { rows: 0 }
        const result = await sql`delete from ${sql.table(JOB_TABLE)} where ${naming(subject)}`.execute(trx)
        return { rows: Number(result.numAffectedRows ?? 0) }
      },
    },
  },
]
