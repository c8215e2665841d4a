import type { PlinthModule } from '../../core/module.ts'
import './jobs.tables.ts'
import { HEARTBEAT_JOB, HEARTBEAT_SCHEDULE, heartbeatCheck, heartbeatJob } from './heartbeat.ts'
import { jobsPersonalData } from './jobs.privacy.ts'
import { provideJobs, provideSchedules } from './jobs.provides.ts'
import { jobsRoutes, schedulesRoutes } from './jobs.routes.ts'
import createJobTables from './migrations/0004-create-job-tables.ts'
import { RETENTION_JOB, RETENTION_SCHEDULE, retentionJob } from './retention-job.ts'

/**
 * Durable jobs and cron schedules on pg-boss. This module provides the engine (`ctx.jobs`) and the
 * schedules (`ctx.schedules`) through which every module enqueues, and owns the tables, the
 * built-in heartbeat and retention jobs and their schedules, the HTTP API and the `jobs` health
 * check.
 */
export const jobsModule: PlinthModule = {
  name: 'jobs',
  migrations: { '0004-create-job-tables': createJobTables },
  personalData: jobsPersonalData,
  jobs: (ctx) => [heartbeatJob(ctx.db), retentionJob(ctx.retention)],
  schedules: (ctx) => [
    {
      id: HEARTBEAT_SCHEDULE,
      input: {
        jobName: HEARTBEAT_JOB,
        cron: ctx.config.jobsHeartbeatCron,
        description: 'Built-in: proves a worker runs jobs (see /health).',
      },
    },
    {
      id: RETENTION_SCHEDULE,
      input: {
        jobName: RETENTION_JOB,
        cron: ctx.config.retentionCron,
        description: 'Built-in: deletes expired sessions, tokens, e-mail, deliveries and audit rows.',
      },
    },
  ],
  routes(api, ctx) {
    jobsRoutes(api, ctx)
    schedulesRoutes(api, ctx)
  },
  healthChecks: (ctx) => [heartbeatCheck(ctx.config, ctx.db)],
  provides: { jobs: provideJobs, schedules: provideSchedules },
}
