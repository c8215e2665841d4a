import type { PlinthModule } from '../../core/module.ts'
import './jobs.tables.ts'
import { heartbeatCheck, heartbeatJob } from './heartbeat.ts'
import { jobsPersonalData } from './jobs.privacy.ts'
import { jobsRoutes, schedulesRoutes } from './jobs.routes.ts'
import createJobTables from './migrations/0004-create-job-tables.ts'

/**
 * Durable jobs and cron schedules on pg-boss. The engine itself (`ctx.jobs`, `ctx.schedules`) is
 * built by the composition root so that every module can enqueue; this module owns the tables,
 * the built-in heartbeat job, the HTTP API and the `jobs` health check.
 */
export const jobsModule: PlinthModule = {
  name: 'jobs',
  migrations: { '0004-create-job-tables': createJobTables },
  personalData: jobsPersonalData,
  jobs: (ctx) => [heartbeatJob(ctx.db)],
  routes(api, ctx) {
    jobsRoutes(api, ctx)
    schedulesRoutes(api, ctx)
  },
  healthChecks: (ctx) => [heartbeatCheck(ctx.config, ctx.db)],
}
