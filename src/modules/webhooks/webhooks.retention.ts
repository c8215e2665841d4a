import type { PlinthConfig } from '../../config/config.schema.ts'
import { deleteInBatches, formatPeriod, type RetentionRule } from '../../core/retention.ts'

/**
 * `webhooks.deliveries`: delivery attempts recorded more than `PLINTH_WEBHOOKS_RETENTION` ago.
 * Recording an attempt already prunes its own subscription's old ones; this catches subscriptions
 * that no longer receive events.
 */
export function webhooksRetention(config: PlinthConfig): RetentionRule[] {
  return [
    {
      name: 'webhooks.deliveries',
      describe: `webhook delivery attempts older than ${formatPeriod(config.webhooksRetention)} (PLINTH_WEBHOOKS_RETENTION)`,
      run(run) {
        const cutoff = new Date(run.now.getTime() - config.webhooksRetention)
        return deleteInBatches(run, async (limit) => {
          const r = await run.db
            .deleteFrom('webhook_deliveries')
            .where('id', 'in', (qb) =>
              qb.selectFrom('webhook_deliveries').select('id').where('created_at', '<', cutoff).limit(limit),
            )
            .executeTakeFirst()
          return Number(r.numDeletedRows)
        })
      },
    },
  ]
}
