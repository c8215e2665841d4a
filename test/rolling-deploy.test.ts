import assert from 'node:assert/strict'
import { after, describe, it } from 'node:test'
import { load, stopLoad } from '../bench/lib/load.ts'
import { type Fleet, signIn, skipUnlessHaproxy, startFleet } from './helpers/fleet.ts'
import { skipUnlessPostgres, skipUnlessRedis } from './helpers/services.ts'
import { createTestDatabase, type TestDatabase } from './helpers/test-database.ts'
import { holdsFor } from './helpers/wait-for.ts'

// A zero-downtime rolling deploy, for real: HAProxy (with deploy/haproxy/defaults.cfg) in front of
// two Plinth replicas on PostgreSQL and Redis, under a steady load of authenticated API requests.
// Each replica is replaced by one of the next release, one at a time: the new one takes traffic
// (HAProxy's /ready checks) before the old one gets SIGTERM and drains. Not one request may fail.
// A broken release (it cannot become ready) is started beside them and must get no traffic.

const skip = skipUnlessHaproxy() || (await skipUnlessPostgres()) || (await skipUnlessRedis())
const ADMIN = { email: 'ops-admin@example.com', password: 'violet-kettle-harbour-42' }
const CONNECTIONS = 8

describe('rolling deploy behind HAProxy', { skip, timeout: 10 * 60_000 }, () => {
  let fleet: Fleet | undefined
  let empty: TestDatabase | undefined
  after(async () => {
    stopLoad()
    await fleet?.stop()
    await empty?.drop()
  })

  it('replaces both replicas under load with 0 failed requests; a release that is not ready gets no traffic', {
    timeout: 8 * 60_000,
  }, async () => {
    empty = await createTestDatabase()
    const release = (n: number) => ({ PLINTH_REVISION: `release-${n}` })
    // Release 1 on a1 and a2; b1, b2 (release 2) and the broken release are slots, DOWN for now.
    fleet = await startFleet({
      replicas: ['a1', 'a2'],
      slots: ['b1', 'b2', 'broken'],
      admin: ADMIN,
      env: {
        PLINTH_REPLICAS: '2',
        // autocannon is one client: the limiter runs, but must not refuse it.
        PLINTH_RATE_LIMIT_API: '1000000',
      },
      envFor: () => release(1),
    })
    const { proxy, replicas, base } = fleet
    const ports = { broken: fleet.ports.get('broken')! }
    const start = (name: string, env: Record<string, string>) => fleet!.start(name, env)
    const before = (await proxy.stats()).get('broken')!.sessions
    const token = await signIn(base, ADMIN.email, ADMIN.password)
    const request = { url: `${base}/api/v1/me`, headers: { authorization: `Bearer ${token}` } }

    // Baseline: the same load with nothing changing, in this same run (the machine is shared).
    const steady = await load(request, CONNECTIONS, 5)
    assert.equal(steady.errors + steady.non2xx, 0, `steady load failed: ${JSON.stringify(steady)}`)

    const during = load(request, CONNECTIONS, 300)
    const events: string[] = []
    try {
      // A broken release: its migrations never ran (an empty database, PLINTH_MIGRATE_ON_START=false),
      // so /ready answers 503. It starts and listens, and HAProxy keeps it out.
      const broken = start('broken', {
        ...release(2),
        DATABASE_URL: empty.url,
        PLINTH_MIGRATE_ON_START: 'false',
      })
      await broken.listening
      const ready = await fetch(`http://127.0.0.1:${ports.broken}/ready`)
      assert.equal(ready.status, 503)
      assert.deepEqual(
        ((await ready.json()) as { failing: { component: string }[] }).failing.map((f) => f.component),
        ['migrations'],
      )
      await holdsFor(
        'the broken release stays DOWN with no traffic',
        async () => {
          const stat = (await proxy.stats()).get('broken')!
          return stat.status.startsWith('DOWN') && stat.sessions === before
        },
        { forMs: 4000, intervalMs: 250 },
      )
      assert.equal(await broken.stop(), 0)
      events.push('broken release refused')

      // Release 2, one replica at a time: the new one is UP in HAProxy before the old one drains.
      for (const [oldName, newName] of [
        ['a1', 'b1'],
        ['a2', 'b2'],
      ] as const) {
        const next = start(newName, release(2))
        await next.listening
        await proxy.waitFor(newName, 'UP')
        events.push(`${newName} up`)
        const old = replicas.find((r) => r.name === oldName)!
        const code = await old.stop()
        assert.equal(code, 0, `${oldName} exited ${code}`)
        assert.ok(old.lines().some((l) => l.msg === 'shutdown complete'))
        await proxy.waitFor(oldName, 'DOWN')
        events.push(`${oldName} drained`)
      }
      // Some more load on release 2 alone.
      await holdsFor('release 2 serves', async () => true, { forMs: 2000, intervalMs: 500 })
    } finally {
      stopLoad()
    }
    const roll = await during
    const stats = await proxy.stats()
    console.log(
      `# rolling deploy: ${Math.round(roll.rps)} req/s, failed ${roll.errors + roll.non2xx}, ` +
        `p50 ${roll.p50Ms.toFixed(1)} ms, p99 ${roll.p99Ms.toFixed(1)} ms during the roll; ` +
        `steady baseline p50 ${steady.p50Ms.toFixed(1)} ms, p99 ${steady.p99Ms.toFixed(1)} ms ` +
        `(${CONNECTIONS} connections, shared loaded machine)`,
    )
    assert.deepEqual(events, ['broken release refused', 'b1 up', 'a1 drained', 'b2 up', 'a2 drained'])
    assert.equal(roll.errors, 0, 'socket errors or timeouts during the roll')
    assert.equal(roll.non2xx, 0, 'non-2xx answers during the roll')
    assert.ok(roll.rps > 0)
    assert.equal(stats.get('broken')!.sessions, before, 'the broken release got traffic')
    for (const name of ['b1', 'b2']) assert.ok(stats.get(name)!.sessions > 0, `${name} got no traffic`)
    // Every request the old replicas accepted, they answered: they logged no cut connection.
    for (const r of replicas.filter((x) => x.name.startsWith('a')))
      assert.ok(!r.lines().some((l) => l.msg === 'shutdown timeout reached'), `${r.name} cut connections`)
  })
})
