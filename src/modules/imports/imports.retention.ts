import { sql } from 'kysely'
import type { PlinthConfig } from '../../config/config.schema.ts'
import { deleteInBatches, formatPeriod, RETENTION_BATCH, type RetentionRule } from '../../core/retention.ts'

/**
 * `imports.checkpoints`: finished imports (complete or failed) last touched more than
 * `PLINTH_IMPORT_RETENTION` ago, with their rejected-row reports (cascade) and any keys a failed
 * one left in `import_seen_keys` (unlogged, so no foreign key: deleted first). Running imports stay,
 * so that they can resume. Re-running a file whose checkpoint is gone changes nothing either: every
 * row comes back `unchanged` from the upsert.
 */
export function importsRetention(config: PlinthConfig): RetentionRule[] {
  return [
    {
      name: 'imports.checkpoints',
      describe: `finished imports and their rejected-row reports older than ${formatPeriod(config.importRetention)} (PLINTH_IMPORT_RETENTION)`,
      async run(run) {
        const cutoff = new Date(run.now.getTime() - config.importRetention)
        // Keys a failed import left behind go first, in short statements, and are not counted:
        // the rule counts imports (their reports go with them by cascade).
        while (!run.signal.aborted) {
          const r = await sql`
            delete from import_seen_keys where ctid in (
              select k.ctid from import_seen_keys k join import_checkpoints c on c.id = k.checkpoint_id
              where c.status in ('complete', 'failed') and c.updated_at < ${cutoff}
              limit ${RETENTION_BATCH})`.execute(run.db)
          if (Number(r.numAffectedRows ?? 0n) < RETENTION_BATCH) break
        }
        const checkpoints = await deleteInBatches(run, async (limit) => {
          const r = await run.db
            .deleteFrom('import_checkpoints')
            .where('id', 'in', (qb) =>
              qb
                .selectFrom('import_checkpoints')
                .select('id')
                .where('status', 'in', ['complete', 'failed'])
                .where('updated_at', '<', cutoff)
                .limit(limit),
            )
            .executeTakeFirst()
          return Number(r.numDeletedRows)
        })
        return checkpoints
      },
    },
  ]
}
