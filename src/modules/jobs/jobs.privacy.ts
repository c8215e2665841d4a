import type { PersonalDataTable } from '../../core/privacy.ts'
import { deleteJobsNaming, JOBS_SCHEMA, jobsNaming } from './job-store.ts'

const JOB_TABLE = `${JOBS_SCHEMA}.job`

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
    exportRows: (db, subject) => jobsNaming(db, subject),
    erase: {
      action: 'custom',
      describe: 'deleted, whatever their state: a job acting for an erased person has nothing left to do',
      async run(trx, subject) {
        return { rows: await deleteJobsNaming(trx, subject) }
      },
    },
  },
]
