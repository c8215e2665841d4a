import type { AuditChainSummary } from '../../core/audit.ts'
import type { DatabaseFacts } from './database-facts.ts'
import type { BackupManifest } from './manifest.ts'

export interface VerificationCheck {
  readonly name: string
  readonly ok: boolean
  readonly detail: string
  /** The error code, when the check failed on one. */
  readonly code?: string | undefined
}

/** The result of restoring a backup to a scratch target and checking it; stored beside the backup (sealed). */
export interface Verification {
  readonly id: string
  readonly ok: boolean
  readonly at: string
  readonly durationMs: number
  readonly checks: VerificationCheck[]
}

/** Compares what a scratch restore holds with what the manifest promised. */
export function compareFacts(
  m: BackupManifest,
  facts: DatabaseFacts,
  chain: AuditChainSummary | null,
): VerificationCheck[] {
  const checks: VerificationCheck[] = []
  checks.push(
    facts.migrationHead === m.migrationHead
      ? { name: 'migration-head', ok: true, detail: `at ${m.migrationHead ?? 'no migration'}` }
      : {
          name: 'migration-head',
          ok: false,
          detail: `restored at ${facts.migrationHead}, the manifest says ${m.migrationHead}`,
        },
  )
  const tables = new Set([...Object.keys(m.rowCounts), ...Object.keys(facts.rowCounts)])
  const wrong = [...tables].filter((t) => m.rowCounts[t] !== facts.rowCounts[t])
  checks.push(
    wrong.length === 0
      ? { name: 'row-counts', ok: true, detail: `${tables.size} table(s) hold the counted rows` }
      : {
          name: 'row-counts',
          ok: false,
          detail: wrong
            .slice(0, 10)
            .map(
              (t) =>
                `${t}: restored ${facts.rowCounts[t] ?? 'missing'}, manifest ${m.rowCounts[t] ?? 'missing'}`,
            )
            .join('; '),
        },
  )
  if (chain === null) {
    checks.push({
      name: 'audit-chain',
      ok: m.auditHead === null,
      detail: m.auditHead === null ? 'no audit log in this backup' : 'the audit log is missing',
    })
  } else if (!chain.ok) {
    checks.push({
      name: 'audit-chain',
      ok: false,
      detail: chain.failure ?? 'the restored audit chain does not verify',
    })
  } else {
    const same =
      (chain.head?.seq ?? null) === (m.auditHead?.seq ?? null) &&
      (chain.head?.hash ?? null) === (m.auditHead?.hash ?? null)
    checks.push(
      same
        ? {
            name: 'audit-chain',
            ok: true,
            detail: `${chain.checked} row(s) verify, head seq ${chain.head?.seq ?? 'none'}`,
          }
        : {
            name: 'audit-chain',
            ok: false,
            detail: `the restored chain ends at seq ${chain.head?.seq ?? 'none'}, the manifest at ${m.auditHead?.seq ?? 'none'}`,
          },
    )
  }
  return checks
}
