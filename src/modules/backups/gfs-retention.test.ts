import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { planRetention, type RetentionCandidate } from './gfs-retention.ts'

const at = (iso: string, verified = true, id = iso): RetentionCandidate => ({
  id,
  at: new Date(iso),
  verified,
})
const ids = (plan: ReturnType<typeof planRetention>) => plan.keep.map((k) => k.id)

describe('grandfather-father-son retention', () => {
  it('keeps the newest backup of each of the last N hours, days, weeks and months', () => {
    // One backup every hour for 60 days.
    const all: RetentionCandidate[] = []
    const start = Date.UTC(2026, 0, 1)
    for (let h = 0; h < 60 * 24; h++) all.push(at(new Date(start + h * 3_600_000).toISOString()))
    const plan = planRetention(all, { hourly: 24, daily: 7, weekly: 4, monthly: 3 })
    const kept = new Set(ids(plan))
    const newest = all.at(-1)!
    // The last 24 hours, each hour's (only) backup.
    for (let h = 0; h < 24; h++) assert.ok(kept.has(all[all.length - 1 - h]!.id))
    // Daily: the newest of each of the last 7 days = 23:00 of the six days before today.
    for (let d = 1; d < 7; d++)
      assert.ok(kept.has(new Date(Date.UTC(2026, 2, 1 - d, 23)).toISOString()), `day -${d}`)
    // Monthly: the newest of January and February.
    assert.ok(kept.has('2026-01-31T23:00:00.000Z'))
    assert.ok(kept.has('2026-02-28T23:00:00.000Z'))
    assert.ok(kept.has(newest.id))
    assert.equal(plan.keep.length + plan.remove.length, all.length)
    assert.ok(plan.keep.length <= 24 + 7 + 4 + 3)
    assert.ok(!kept.has('2026-01-15T10:00:00.000Z'))
  })

  it('a failed backup never fills a period, and goes once a newer one verifies', () => {
    const plan = planRetention(
      [
        at('2026-03-01T10:00:00Z', false, 'failed-old'),
        at('2026-03-01T11:00:00Z', true, 'good'),
        at('2026-03-01T12:00:00Z', false, 'pending'),
      ],
      { hourly: 24, daily: 1, weekly: 1, monthly: 1 },
    )
    assert.deepEqual(ids(plan), ['pending', 'good'])
    assert.deepEqual(plan.remove, [{ id: 'failed-old', reason: 'not verified, and a newer backup is' }])
  })

  it('keeps the newest verified backup even with every count at zero', () => {
    const plan = planRetention([at('2026-03-01T10:00:00Z'), at('2026-03-02T10:00:00Z')], {
      hourly: 0,
      daily: 0,
      weekly: 0,
      monthly: 0,
    })
    assert.deepEqual(ids(plan), ['2026-03-02T10:00:00Z'])
  })

  it('weeks start on Monday (UTC)', () => {
    // Sunday 2026-03-08 and Monday 2026-03-09 are in different ISO weeks.
    const plan = planRetention([at('2026-03-08T12:00:00Z'), at('2026-03-09T12:00:00Z')], {
      hourly: 0,
      daily: 0,
      weekly: 2,
      monthly: 0,
    })
    assert.equal(plan.keep.length, 2)
  })
})
