/** How many backups to keep per period (grandfather-father-son). */
export interface GfsPolicy {
  readonly hourly: number
  readonly daily: number
  readonly weekly: number
  readonly monthly: number
}

export interface RetentionCandidate {
  readonly id: string
  /** When the backup began. */
  readonly at: Date
  /** Only verified backups fill a period; the others are judged below. */
  readonly verified: boolean
}

export interface RetentionPlan {
  /** Kept, with the periods each one stands for (`hourly 2026-12-06T01`, `daily 2026-12-06` …). */
  readonly keep: readonly { readonly id: string; readonly reasons: readonly string[] }[]
  readonly remove: readonly { readonly id: string; readonly reason: string }[]
}

const pad = (n: number) => String(n).padStart(2, '0')
const day = (d: Date) => `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`
const PERIODS: readonly { name: keyof GfsPolicy; key(d: Date): string }[] = [
  { name: 'hourly', key: (d) => `${day(d)}T${pad(d.getUTCHours())}` },
  { name: 'daily', key: day },
  {
    name: 'weekly',
    // The Monday (UTC) of the ISO week.
    key: (d) =>
      day(
        new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate() - ((d.getUTCDay() + 6) % 7))),
      ),
  },
  { name: 'monthly', key: (d) => `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}` },
]

/**
 * Which backups grandfather-father-son retention keeps: for each period kind, the newest verified
 * backup of each of the `policy[kind]` most recent periods that have one. Besides: the newest
 * verified backup is always kept; a backup that is not verified is kept while it is newer than the
 * newest verified one (it may still be verifying), and removed once a newer one is verified
 * (a failed or never-verified backup must not take a good one's place). Pure: no clock, no I/O.
 *
 * @example
 * planRetention(backups, { hourly: 24, daily: 30, weekly: 12, monthly: 12 })
 */
export function planRetention(candidates: readonly RetentionCandidate[], policy: GfsPolicy): RetentionPlan {
  const newestFirst = [...candidates].sort(
    (a, b) => b.at.getTime() - a.at.getTime() || (a.id < b.id ? 1 : -1),
  )
  const verified = newestFirst.filter((c) => c.verified)
  const reasons = new Map<string, string[]>()
  const keep = (id: string, reason: string) => reasons.set(id, [...(reasons.get(id) ?? []), reason])

  if (verified[0]) keep(verified[0].id, 'newest verified')
  for (const period of PERIODS) {
    const limit = policy[period.name]
    const seen = new Set<string>()
    for (const c of verified) {
      const key = period.key(c.at)
      if (seen.has(key)) continue
      if (seen.size >= limit) break
      seen.add(key)
      keep(c.id, `${period.name} ${key}`)
    }
  }
  const newestVerifiedAt = verified[0]?.at.getTime() ?? Number.NEGATIVE_INFINITY
  const remove: { id: string; reason: string }[] = []
  for (const c of newestFirst) {
    if (reasons.has(c.id)) continue
    if (!c.verified && c.at.getTime() > newestVerifiedAt)
      keep(c.id, 'not verified yet, newer than the newest verified')
    else
      remove.push({
        id: c.id,
        reason: c.verified ? 'outside every retention period' : 'not verified, and a newer backup is',
      })
  }
  return {
    keep: newestFirst
      .filter((c) => reasons.has(c.id))
      .map((c) => ({ id: c.id, reasons: reasons.get(c.id)! })),
    remove,
  }
}
