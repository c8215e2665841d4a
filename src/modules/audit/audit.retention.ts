import type { PlinthConfig } from '../../config/config.schema.ts'
import { deleteInBatches, formatPeriod, type RetentionRule } from '../../core/retention.ts'
import { pruneAudit } from './audit-chain.ts'

/**
 * Audit rows one pruning transaction removes at most. Each stretch leaves a checkpoint and an
 * `audit:pruned` row, so the stretches are larger than other rules' batches: a year's backlog is a
 * few dozen short transactions, not thousands of checkpoints.
 */
export const AUDIT_PRUNE_BATCH = 10_000

/**
 * `audit.log`: audit rows older than `PLINTH_AUDIT_RETENTION`, pruned with `pruneAudit` (verified
 * first, under a checkpoint from which the chain still verifies; a broken chain is never pruned
 * and fails the rule with PLINTH_AUDIT_CHAIN_BROKEN).
 */
export function auditRetention(config: PlinthConfig, options: { batch?: number } = {}): RetentionRule[] {
  const batch = options.batch ?? AUDIT_PRUNE_BATCH
  return [
    {
      name: 'audit.log',
      describe: `audit rows older than ${formatPeriod(config.auditRetention)} (PLINTH_AUDIT_RETENTION), under a checkpoint`,
      run(run) {
        const before = new Date(run.now.getTime() - config.auditRetention)
        return deleteInBatches(
          run,
          async (limit) => (await pruneAudit(run.db, { before, maxRows: limit })).pruned,
          { limit: batch },
        )
      },
    },
  ]
}
