import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { setImmediate as nextTurn, setTimeout as sleep } from 'node:timers/promises'
import { RETRY_AFTER_SECONDS, STARTUP_GRACE_MS } from '../src/http/plugins/pressure.ts'
import { assertProblem } from './helpers/assert-problem.ts'
import { skipUnlessPostgres } from './helpers/services.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'

const MAX_DELAY_MS = 30
/**
 * @fastify/under-pressure samples the event-loop delay every `sampleInterval` (default 1000 ms,
 * not set by Plinth) as the histogram's mean minus its 10 ms resolution. A verdict therefore
 * holds for about a second: long enough for a handful of injected requests, and it clears by
 * itself one calm sample later. Every wait below is bounded by a few sample intervals.
 */
const SAMPLE_INTERVAL_MS = 1000
const WAIT_LIMIT_MS = 5 * SAMPLE_INTERVAL_MS + STARTUP_GRACE_MS

/** Keeps the event loop busy for `ms` (the synchronous work an overloaded process is stuck in). */
function busy(ms: number): void {
  const end = performance.now() + ms
  while (performance.now() < end) {
    // spin
  }
}

async function until(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + WAIT_LIMIT_MS
  while (!condition()) {
    assert.ok(Date.now() < deadline, `timed out after ${WAIT_LIMIT_MS} ms waiting for ${what}`)
    await sleep(25)
  }
}

for (const backend of ['embedded', 'postgres'] as const) {
  describe(`overload protection on ${backend}`, {
    skip: backend === 'postgres' ? await skipUnlessPostgres() : false,
  }, () => {
    let plinth: TestPlinth
    before(async () => {
      plinth = await startTestPlinth({ backend, env: { PLINTH_MAX_EVENT_LOOP_DELAY: `${MAX_DELAY_MS}ms` } })
    })
    after(() => plinth?.close())

    it('sheds /api/v1 with 503 and Retry-After while the event loop lags, keeps exempt routes up, then recovers', async () => {
      const app = plinth.app
      // Starting up (PGlite, migrations) may itself have lagged the loop: begin from a calm sample.
      await until(() => !app.isUnderPressure(), 'a calm event-loop sample after start')
      assert.equal((await app.inject('/api/v1')).statusCode, 200)
      // Lag measured during the start-up grace period is never held against requests.
      await sleep(STARTUP_GRACE_MS)

      // Block in slices until a sample sees the lag; between slices the sampler's timer can fire.
      const deadline = Date.now() + WAIT_LIMIT_MS
      while (!app.isUnderPressure()) {
        assert.ok(Date.now() < deadline, 'the blocked event loop was never sampled as under pressure')
        busy(150)
        await nextTurn()
      }
      assert.ok(app.memoryUsage().eventLoopDelay > MAX_DELAY_MS)

      // The verdict holds until the next sample, about a second away: these answer well within it.
      const shed = await app.inject('/api/v1')
      assertProblem(shed, 503, 'PLINTH_HTTP_OVERLOADED')
      assert.equal(shed.headers['retry-after'], String(RETRY_AFTER_SECONDS))
      // /ready is shed too (a balancer stops routing here), as a problem: its own 503 response
      // schema once made the serializer fail into a bare 500 (found by the fuzz suite).
      assertProblem(await app.inject('/ready'), 503, 'PLINTH_HTTP_OVERLOADED')
      for (const url of ['/live', '/health', '/api/metrics']) {
        const res = await app.inject(url)
        assert.equal(res.statusCode, 200, `${url} answered ${res.statusCode} under pressure: ${res.body}`)
      }
      assert.ok(app.isUnderPressure(), 'the pressure verdict cleared before the exempt routes were checked')

      await until(() => !app.isUnderPressure(), 'the event loop to recover')
      const recovered = await app.inject('/api/v1')
      assert.equal(recovered.statusCode, 200, recovered.body)
    })
  })
}
