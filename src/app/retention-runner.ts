import type { Kysely } from 'kysely'
import type { Logger } from 'pino'
import { Counter } from 'prom-client'
import type { Audit } from '../core/audit.ts'
import {
  RETENTION_RULE_NAME,
  type Retention,
  type RetentionRule,
  type RetentionRuleResult,
} from '../core/retention.ts'
import type { PlinthTables } from '../infra/db/tables.ts'
import type { Metrics } from '../observability/metrics.ts'

/**
 * The retention runner over the modules' rules. Built once by the composition root.
 *
 * @example
 * const retention = createRetention({ rules, db: db.kysely, logger, metrics, audit })
 * const report = await retention.run({ trigger: 'cli' })
 */
export function createRetention(deps: {
  rules: readonly RetentionRule[]
  db: Kysely<PlinthTables>
  logger: Logger
  metrics: Metrics
  audit: Audit
}): Retention {
  const { rules, db, audit } = deps
  const seen = new Set<string>()
  for (const rule of rules) {
    if (!RETENTION_RULE_NAME.test(rule.name))
      throw new Error(`Retention rule "${rule.name}" must look like module.what (accounts.sessions)`)
    if (seen.has(rule.name)) throw new Error(`Retention rule "${rule.name}" is declared twice`)
    seen.add(rule.name)
  }
  const registers = [deps.metrics.registry]
  const deletedTotal = new Counter({
    name: 'plinth_retention_deleted_total',
    help: 'Rows deleted by retention, by rule.',
    labelNames: ['rule'] as const,
    registers,
  })
  const runs = new Counter({
    name: 'plinth_retention_runs_total',
    help: 'Retention runs by outcome (failure: at least one rule failed or the run was aborted).',
    labelNames: ['outcome'] as const,
    registers,
  })
  // Every series exists from the start, so that rate() and absent() work before the first run.
  for (const rule of rules) deletedTotal.inc({ rule: rule.name }, 0)
  for (const outcome of ['success', 'failure']) runs.inc({ outcome }, 0)

  return {
    rules,
    async run(options = {}) {
      const log = (options.logger ?? deps.logger).child({ component: 'retention' })
      const signal = options.signal ?? new AbortController().signal
      const now = options.now ?? new Date()
      const started = performance.now()
      const results: RetentionRuleResult[] = []
      for (const rule of rules) {
        if (signal.aborted) {
          results.push({
            rule: rule.name,
            describe: rule.describe,
            deleted: 0,
            error: 'aborted before it ran',
          })
          continue
        }
        const ruleStarted = performance.now()
        let counted = 0
        const onDeleted = (rows: number) => {
          counted += rows
          deletedTotal.inc({ rule: rule.name }, rows)
        }
        try {
          const result = await rule.run({ db, now, signal, onDeleted })
          // a rule that reports only its total is counted here
          if (result.deleted > counted) onDeleted(result.deleted - counted)
          results.push({ rule: rule.name, describe: rule.describe, deleted: counted })
          log.info(
            { rule: rule.name, deleted: counted, durationMs: Math.round(performance.now() - ruleStarted) },
            'retention rule finished',
          )
        } catch (err) {
          // The batches committed before the failure stay deleted (and counted); the next run finds the rest.
          const error = signal.aborted
            ? `aborted: ${String((signal.reason as Error)?.message ?? signal.reason)}`
            : err instanceof Error
              ? err.message
              : String(err)
          results.push({ rule: rule.name, describe: rule.describe, deleted: counted, error })
          log[signal.aborted ? 'warn' : 'error'](
            { err, rule: rule.name, deleted: counted },
            'retention rule failed',
          )
        }
      }
      const deleted = results.reduce((sum, r) => sum + r.deleted, 0)
      const ok = results.every((r) => r.error === undefined)
      const durationMs = Math.round(performance.now() - started)
      runs.inc({ outcome: ok ? 'success' : 'failure' })
      const counts = Object.fromEntries(results.map((r) => [r.rule, r.deleted]))
      const failed = results
        .filter((r) => r.error !== undefined)
        .map((r) => ({ rule: r.rule, error: r.error }))
      try {
        await audit.record(db, {
          action: 'retention:ran',
          actor: { type: 'system' },
          outcome: ok ? 'success' : 'failure',
          details: {
            trigger: options.trigger ?? 'job',
            now: now.toISOString(),
            deleted,
            counts,
            ...(failed.length > 0 ? { failed } : {}),
          },
        })
      } catch (err) {
        log.error({ err }, 'could not record the retention run in the audit log')
      }
      log[ok ? 'info' : 'warn']({ deleted, counts, durationMs, ok }, 'retention finished')
      return { results, deleted, ok, durationMs }
    },
  }
}
