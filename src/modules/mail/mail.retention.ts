import type { PlinthConfig } from '../../config/config.schema.ts'
import { deleteInBatches, formatPeriod, type RetentionRule } from '../../core/retention.ts'

/**
 * `mail.outbox`: e-mail recorded more than `PLINTH_MAIL_RETENTION` ago, whatever its status (mail
 * is sent while the request waits, so a row still `pending` that old was abandoned by a crash).
 * Bodies may hold single-use links, which is why the outbox is not kept for long.
 */
export function mailRetention(config: PlinthConfig): RetentionRule[] {
  return [
    {
      name: 'mail.outbox',
      describe: `e-mail recorded more than ${formatPeriod(config.mailRetention)} ago (PLINTH_MAIL_RETENTION)`,
      run(run) {
        const cutoff = new Date(run.now.getTime() - config.mailRetention)
        return deleteInBatches(run, async (limit) => {
          const r = await run.db
            .deleteFrom('mail_outbox')
            .where('id', 'in', (qb) =>
              qb.selectFrom('mail_outbox').select('id').where('created_at', '<', cutoff).limit(limit),
            )
            .executeTakeFirst()
          return Number(r.numDeletedRows)
        })
      },
    },
  ]
}
