import type { JobEngine, Schedules } from '../../core/jobs.ts'
import type { Provider, Provision } from '../../core/provides.ts'
import { createJobEngine, type PgBossJobEngine } from './job-engine.ts'
import { createSchedules } from './schedules.ts'

/** The engines this module built, so that its schedules know `ctx.jobs` is one (they drive pg-boss). */
const engines = new WeakSet<JobEngine>()

function isPgBossEngine(jobs: JobEngine): jobs is PgBossJobEngine {
  return engines.has(jobs)
}

/**
 * `ctx.jobs`: the engine over pg-boss. It is started in `prepare()` and stopped at the start of
 * shutdown by the root (both are `JobEngine` calls); `close` only waits for that stop (or stops an
 * engine a failed boot never started).
 */
export const provideJobs: Provider<'jobs'> = (ctx): Provision<JobEngine> => {
  const engine = createJobEngine({
    config: ctx.config,
    logger: ctx.logger,
    db: ctx.db,
    metrics: ctx.metrics,
    audit: ctx.audit,
    errorReports: ctx.errorReports,
  })
  engines.add(engine)
  return { value: engine, close: () => engine.stop(0) }
}

/** `ctx.schedules`: cron schedules kept in `job_schedules`, fired by this module's engine. */
export const provideSchedules: Provider<'schedules'> = (ctx): Provision<Schedules> => {
  const { jobs } = ctx
  if (!isPgBossEngine(jobs))
    throw new Error(
      "The jobs module's schedules run on its own job engine, but another module provides ctx.jobs: " +
        'that module must provide schedules too (and the jobs module be left out).',
    )
  return { value: createSchedules({ db: ctx.db, jobs, audit: ctx.audit, logger: ctx.logger }) }
}
