import type { PlinthConfig } from '../../config/config.schema.ts'
import { deleteInBatches, formatPeriod, type RetentionRule } from '../../core/retention.ts'

/** `errors.groups`: error groups not seen for `PLINTH_ERRORS_RETENTION` (whatever their status). */
export function errorsRetention(config: PlinthConfig): RetentionRule[] {
  return [
    {
      name: 'errors.groups',
      describe: `error groups last seen more than ${formatPeriod(config.errorsRetention)} ago (PLINTH_ERRORS_RETENTION)`,
      run(run) {
        const cutoff = new Date(run.now.getTime() - config.errorsRetention)
        return deleteInBatches(run, async (limit) => {
          const r = await run.db
            .deleteFrom('error_groups')
            .where('id', 'in', (qb) =>
              qb.selectFrom('error_groups').select('id').where('last_seen', '<', cutoff).limit(limit),
            )
            .executeTakeFirst()
          return Number(r.numDeletedRows)
        })
      },
    },
  ]
}
