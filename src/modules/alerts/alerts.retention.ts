import type { PlinthConfig } from '../../config/config.schema.ts'
import { deleteInBatches, formatPeriod, type RetentionRule } from '../../core/retention.ts'

/** `alerts.incidents`: incidents resolved more than `PLINTH_ALERTS_RETENTION` ago (timelines cascade). */
export function alertsRetention(config: PlinthConfig): RetentionRule[] {
  return [
    {
      name: 'alerts.incidents',
      describe: `incidents resolved more than ${formatPeriod(config.alertsRetention)} ago (PLINTH_ALERTS_RETENTION)`,
      run(run) {
        const cutoff = new Date(run.now.getTime() - config.alertsRetention)
        return deleteInBatches(run, async (limit) => {
          const r = await run.db
            .deleteFrom('incidents')
            .where('id', 'in', (qb) =>
              qb
                .selectFrom('incidents')
                .select('id')
                .where('status', '=', 'resolved')
                .where('resolved_at', '<', cutoff)
                .limit(limit),
            )
            .executeTakeFirst()
          return Number(r.numDeletedRows)
        })
      },
    },
  ]
}
