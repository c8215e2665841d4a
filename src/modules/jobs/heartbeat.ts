import { sql } from 'kysely'
import { Type } from 'typebox'
import type { PlinthConfig } from '../../config/config.schema.ts'
import { defineJob } from '../../core/jobs.ts'
import type { Database } from '../../infra/db/create-db.ts'
import type { HealthCheck } from '../../observability/health.ts'

export const HEARTBEAT_JOB = 'plinth.heartbeat'
/** The fixed id of the built-in heartbeat schedule. */
export const HEARTBEAT_SCHEDULE = 'plinth.heartbeat'

/**
 * The built-in heartbeat: a tiny job on a schedule (every minute by default). Its completion time
 * is what `/health` reports, so a worker fleet that stopped running jobs shows up where operators
 * look. It also prunes idempotency keys whose window has passed.
 */
export function heartbeatJob(db: Database) {
  return defineJob({
    name: HEARTBEAT_JOB,
    description: 'Records that a worker ran a job (for /health) and prunes expired idempotency keys.',
    payload: Type.Object({}, { additionalProperties: false }),
    policy: { concurrency: 1, retryLimit: 1, retryDelay: 1, timeout: 60, deadLetter: false, retention: 3600 },
    async handler({ id }) {
      await db.kysely
        .insertInto('job_heartbeat')
        .values({ id: 1, completed_at: new Date(), job_id: id })
        .onConflict((oc) => oc.column('id').doUpdateSet({ completed_at: new Date(), job_id: id }))
        .execute()
      const pruned = await sql<{ n: number }>`with gone as (
          delete from job_idempotency_keys where ctid in (
            select ctid from job_idempotency_keys where expires_at <= now() limit 1000)
          returning 1)
        select count(*)::int as n from gone`.execute(db.kysely)
      return { prunedKeys: pruned.rows[0]?.n ?? 0 }
    },
  })
}

/**
 * `jobs` on `/health`: `up` while the last heartbeat completed within `PLINTH_JOBS_HEARTBEAT_MAX_AGE`
 * (or this process started less than that long ago), `degraded` after. Not critical: an instance
 * that serves HTTP still takes traffic when the workers are stuck.
 */
export function heartbeatCheck(config: PlinthConfig, db: Database, startedAt = Date.now()): HealthCheck {
  return {
    name: 'jobs',
    critical: false,
    async check() {
      const row = await db.kysely
        .selectFrom('job_heartbeat')
        .select(['completed_at', 'job_id'])
        .where('id', '=', 1)
        .executeTakeFirst()
      const last = row ? new Date(row.completed_at) : undefined
      const reference = last?.getTime() ?? startedAt
      const ageMs = Date.now() - reference
      return {
        status: ageMs > config.jobsHeartbeatMaxAge ? 'degraded' : 'up',
        details: {
          lastHeartbeat: last ? last.toISOString() : null,
          ageSeconds: last ? Math.round(ageMs / 1000) : null,
          maxAgeSeconds: Math.round(config.jobsHeartbeatMaxAge / 1000),
        },
      }
    },
  }
}
