import assert from 'node:assert/strict'
import { randomInt } from 'node:crypto'
import { after, before, describe, it } from 'node:test'
import pg from 'pg'
import { PLINTH_VERSION } from '../src/core/version.ts'
import {
  type Fleet,
  type Haproxy,
  type Replica,
  signIn,
  skipUnlessHaproxy,
  startFleet,
  startHaproxy,
} from './helpers/fleet.ts'
import { skipUnlessPostgres, skipUnlessRedis } from './helpers/services.ts'
import { openStream } from './helpers/sse.ts'
import { holdsFor, waitFor } from './helpers/wait-for.ts'

// Three Plinth replicas behind HAProxy behave as one service: what one replica does, the others
// see at once — sessions, their revocation (the shared session cache), rate-limit budgets, and cron
// ticks, which fire once per tick whatever the replica count, and event streams (server-sent
// events), which get every replica's events through Redis (docs/decisions/0032-event-stream.md).

const skip = skipUnlessHaproxy() || (await skipUnlessPostgres()) || (await skipUnlessRedis())
const ADMIN = { email: 'scale-admin@example.com', password: 'violet-kettle-harbour-42' }
const API_BUDGET = 30

describe('three replicas behind HAProxy', { skip, timeout: 10 * 60_000 }, () => {
  let fleet: Fleet
  let replicas: Replica[] = []
  let proxy: Haproxy
  let base = ''
  const direct = (r: Replica) => `http://127.0.0.1:${r.port}`
  /**
   * Replicas whose limiter fell back to in-process counters since `mark` (a Redis round trip over
   * 500 ms, which a loaded machine can cause): there the budget is per replica, by design.
   */
  const fellBack = (mark: number[]) =>
    replicas.filter((r, i) => {
      const limiter = r.lines().filter((l) => l.component === 'rate-limit')
      const fallback = (l: Record<string, unknown>) =>
        l.msg === 'rate limits falling back to in-process counters'
      // A fallback during the measurement, or one before it that Redis has not yet ended.
      return r.lines().slice(mark[i]).some(fallback) || (limiter.length > 0 && fallback(limiter.at(-1)!))
    })
  const markLogs = () => replicas.map((r) => r.lines().length)

  before(
    async () => {
      // r3 is a canary: the same code under another revision (what /health and the metrics report).
      fleet = await startFleet({
        replicas: ['r1', 'r2', 'r3'],
        admin: ADMIN,
        env: {
          PLINTH_REPLICAS: '3',
          PLINTH_RATE_LIMIT_API: String(API_BUDGET),
          PLINTH_RATE_LIMIT_WINDOW: '1h',
          PLINTH_JOBS_MONITOR_INTERVAL: '1s',
          PLINTH_JOBS_POLL_INTERVAL: '500ms',
          PLINTH_SHUTDOWN_DELAY: '0',
        },
        envFor: (name) => ({ PLINTH_REVISION: name === 'r3' ? 'canary' : 'stable' }),
      })
      ;({ replicas, proxy, base } = fleet)
    },
    { timeout: 5 * 60_000 },
  )

  after(async () => {
    await fleet?.stop()
  })

  it('spreads requests over all three', async () => {
    const before = await proxy.stats()
    for (let i = 0; i < 9; i++) assert.equal((await fetch(`${base}/live`)).status, 200)
    const after = await proxy.stats()
    for (const r of replicas)
      assert.ok(after.get(r.name)!.sessions > before.get(r.name)!.sessions, `${r.name} got no request`)
  })

  it('canary: weights send the canary its share, and /health and the metrics tell its revision', async () => {
    // As deploy/haproxy/haproxy.cfg does: stable servers at 100, the canary at a small weight.
    const weighted = await startHaproxy(
      replicas.map((r) => ({ name: r.name, port: r.port, weight: r.name === 'r3' ? 10 : 45 })),
    )
    try {
      for (const r of replicas) await weighted.waitFor(r.name, 'UP')
      const seen = new Map<string, number>()
      for (let i = 0; i < 200; i++) {
        // Through loopback HAProxy, the caller counts as an operator: /health shows the details.
        const body = (await (await fetch(`http://127.0.0.1:${weighted.port}/health`)).json()) as {
          version: string
          revision: string
        }
        assert.equal(body.version, PLINTH_VERSION)
        seen.set(body.revision, (seen.get(body.revision) ?? 0) + 1)
      }
      const share = (seen.get('canary') ?? 0) / 200
      assert.ok(share >= 0.05 && share <= 0.15, `canary share ${share} (${JSON.stringify([...seen])})`)
      assert.equal((seen.get('canary') ?? 0) + (seen.get('stable') ?? 0), 200)
    } finally {
      await weighted.stop()
    }
    const metrics = await (await fetch(`${direct(replicas[2]!)}/api/metrics`)).text()
    assert.match(
      metrics,
      new RegExp(`plinth_build_info\\{version="${PLINTH_VERSION.replaceAll('.', '\\.')}",revision="canary"`),
    )
  })

  it('a session made on one replica works on every replica, and its revocation is seen by all at once', async () => {
    const token = await signIn(base, ADMIN.email, ADMIN.password)
    const me = (r: Replica) =>
      fetch(`${direct(r)}/api/v1/me`, { headers: { authorization: `Bearer ${token}` } }).then(
        (res) => res.status,
      )
    // Twice each: the second answer comes from the session cache (Redis, shared).
    for (const r of [...replicas, ...replicas])
      assert.equal(await me(r), 200, `${r.name} refused the session`)
    const logout = await fetch(`${direct(replicas[0]!)}/api/v1/auth/logout`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}` },
    })
    assert.ok(logout.status < 300, `logout answered ${logout.status}`)
    // No waiting: the other replicas refuse it on the very next request.
    for (const r of replicas) assert.equal(await me(r), 401, `${r.name} still accepts a revoked session`)
  })

  it('an event emitted through one replica reaches event streams open on the others, exactly once each', async () => {
    const token = await signIn(base, ADMIN.email, ADMIN.password)
    const auth = { authorization: `Bearer ${token}` }
    const [r1, r2, r3] = replicas as [Replica, Replica, Replica]
    const streams = [
      await openStream(`${direct(r1)}/api/v1/events/stream?types=scale.*`, auth),
      await openStream(`${direct(r3)}/api/v1/events/stream?types=scale.*`, auth),
    ]
    try {
      for (const s of streams) {
        assert.equal(s.status, 200, JSON.stringify(s.body))
        await waitFor('the stream open', () => s.retry() !== undefined)
      }
      const emitted = await fetch(`${direct(r2)}/api/v1/events`, {
        method: 'POST',
        headers: { ...auth, 'content-type': 'application/json' },
        body: JSON.stringify({ type: 'scale.fanned-out', data: { via: 'r2' } }),
      })
      assert.equal(emitted.status, 202, await emitted.clone().text())
      const { id } = (await emitted.json()) as { id: string }
      for (const s of streams) {
        const [message] = await s.waitForMessages(1, 'scale.fanned-out', 30_000)
        assert.equal(message!.id, id)
        assert.deepEqual((JSON.parse(message!.data!) as { data: unknown }).data, { via: 'r2' })
      }
      // Once: through Redis only (no replica also hands it out on its own), and never twice.
      await holdsFor('no second copy', () => streams.every((s) => s.messages.length === 1), { forMs: 1000 })
    } finally {
      for (const s of streams) s.close()
    }
  })

  it('fires a cron schedule once per tick, whichever replica wins each cron pass', async () => {
    const token = await signIn(base, ADMIN.email, ADMIN.password)
    const created = await fetch(`${base}/api/v1/schedules`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ jobName: 'plinth.heartbeat', cron: '* * * * *' }),
    })
    assert.equal(created.status, 201, await created.clone().text())
    const { id } = (await created.json()) as { id: string }
    const pool = new pg.Pool({ connectionString: fleet.db.url, max: 1 })
    try {
      const count = async () =>
        (
          await pool.query<{ ticks: number; jobs: number; cron_on: Date | null }>(
            `select (select count(distinct t.data->>'slot')::int from plinth_jobs.job t
                      where t.data->>'key' = $1 and t.data ? 'slot') as ticks,
                    (select count(*)::int from plinth_jobs.job j
                      where j.name = 'plinth.heartbeat' and j.data->'meta'->>'scheduleId' = $1) as jobs,
                    (select cron_on from plinth_jobs.version) as cron_on`,
            [id],
          )
        ).rows[0]!
      // The next minute boundary, then three more cron passes by whichever replicas win them.
      await waitFor('the schedule to fire', async () => (await count()).jobs > 0, {
        timeoutMs: 90_000,
        intervalMs: 250,
      })
      for (let pass = 0; pass < 3; pass++) {
        const seen = (await count()).cron_on?.getTime()
        await waitFor(`cron pass ${pass + 1}`, async () => (await count()).cron_on?.getTime() !== seen, {
          timeoutMs: 30_000,
          intervalMs: 250,
        })
      }
      // A tick becomes its job at the next fetch of the send-it queue (a poll later), so a minute
      // boundary during the passes leaves the newest tick briefly without one: every tick gets its
      // job in the end, and none ever gets two.
      const final = await waitFor(
        'every tick forwarded to its job',
        async () => {
          const c = await count()
          assert.ok(c.jobs <= c.ticks, `${c.jobs} jobs for ${c.ticks} ticks`)
          return c.jobs === c.ticks ? c : undefined
        },
        { timeoutMs: 30_000, intervalMs: 250 },
      )
      assert.ok(final.ticks >= 1)
      // Every replica runs a cron pass: all three are candidates, and still one job per tick.
      const monitors = replicas.map((r) => r.lines().some((l) => l.component === 'jobs'))
      assert.deepEqual(monitors, [true, true, true])
    } finally {
      await pool.end()
    }
  })

  it('one signed-in client has one rate-limit budget across the replicas, not one per replica', async (t) => {
    const token = await signIn(base, ADMIN.email, ADMIN.password)
    const me = () => fetch(`${base}/api/v1/me`, { headers: { authorization: `Bearer ${token}` } })
    // Earlier tests spent some of this user's budget: start from what the limiter says is left.
    const first = await me()
    assert.equal(first.status, 200)
    const left = Number(first.headers.get('ratelimit-remaining'))
    assert.ok(left > 3 && left < API_BUDGET, `remaining ${left}`)
    const mark = markLogs()
    const statuses: number[] = []
    for (let i = 0; i < left + 2 * replicas.length; i++) {
      const res = await me()
      statuses.push(res.status)
      await res.body?.cancel()
    }
    const degraded = fellBack(mark)
    if (degraded.length > 0) {
      t.diagnostic(`limiter fell back on ${degraded.map((r) => r.name)}: counts were per replica meanwhile`)
      assert.ok(statuses.filter((x) => x === 200).length <= left * replicas.length)
      return
    }
    // Round robin: each replica served some of them, and together they allowed exactly the budget.
    assert.deepEqual(
      statuses,
      [...Array(left).fill(200), ...Array(2 * replicas.length).fill(429)],
      statuses.join(' '),
    )
  })

  it('refused anonymous requests meet one shared budget: exactly the budget across the replicas, then 429 everywhere', async (t) => {
    // Each refusal is counted in Redis (one atomic INCR) before it is sent; the one over the budget
    // is answered 429 on whichever replica it lands, so the replicas together refuse (401) exactly
    // the budget. Separate budgets would allow 3 × the budget.
    const client = `198.51.100.${randomInt(1, 254)}`
    const mark = markLogs()
    const statuses: number[] = []
    const blockedEverywhere = () => statuses.length >= 3 && statuses.slice(-3).every((s) => s === 429)
    while (!blockedEverywhere() && statuses.length < API_BUDGET * replicas.length + 3) {
      const res = await fetch(`${base}/api/v1/me`, { headers: { 'x-forwarded-for': client } })
      statuses.push(res.status)
      await res.body?.cancel()
    }
    const refused = statuses.filter((s) => s === 401).length
    t.diagnostic(`${refused} refusals before all three replicas blocked (budget ${API_BUDGET})`)
    const degraded = fellBack(mark)
    if (degraded.length > 0) {
      t.diagnostic(`limiter fell back on ${degraded.map((r) => r.name)}: counts were per replica meanwhile`)
      assert.ok(refused <= API_BUDGET * replicas.length)
      return
    }
    assert.deepEqual(statuses, [...Array(API_BUDGET).fill(401), ...Array(3).fill(429)], statuses.join(' '))
    // Every replica answered some of the refusals, and every one of them now refuses the address.
    for (const r of replicas) {
      const res = await fetch(`${direct(r)}/api/v1/me`, { headers: { 'x-forwarded-for': client } })
      assert.equal(res.status, 429, `${r.name} answered ${res.status}`)
      await res.body?.cancel()
    }
  })
})
