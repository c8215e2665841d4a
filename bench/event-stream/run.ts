/**
 * Event-stream benchmark: how long an emitted event takes to reach an open stream
 * (`GET /api/v1/events/stream`), through Redis (XADD, then each process's XREAD reader) beside the
 * in-process hub as the baseline, in the same run. Each side is a production Plinth in this process
 * on a fresh database of the PostgreSQL server (BENCH_DATABASE_URL); the Redis side uses REDIS_URL
 * (BENCH_REDIS_URL, default the local test server) under a prefix of its own. Events are emitted
 * one at a time (`ctx.events.emit`, its own transaction) at a paced rate; the latency is from the
 * call to the message read off the stream. Exits 0 whatever the figures; 1 when a run fails.
 *
 * Usage: node bench/event-stream/run.ts [--events <n>]
 */
import { randomBytes } from 'node:crypto'
import { get, type IncomingMessage } from 'node:http'
import { parseArgs } from 'node:util'
import { Redis } from 'ioredis'
import pg from 'pg'
import { HOST, signInNewUser, startProductionPlinth } from '../lib/plinth-child.ts'

const SERVER_URL = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres'
const REDIS_URL = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379'
const RATE_PER_SECOND = 100

const { values } = parseArgs({ options: { events: { type: 'string' }, help: { type: 'boolean' } } })
if (values.help) {
  console.log('Usage: node bench/event-stream/run.ts [--events <n>]  (100-20000, default 1000)')
  process.exit(0)
}
const EVENTS = Math.min(20_000, Math.max(100, Number(values.events ?? 1000) || 1000))

async function admin(sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: SERVER_URL })
  await client.connect()
  try {
    await client.query(sql)
  } finally {
    await client.end()
  }
}

function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!
}

async function side(name: string, redis: boolean) {
  const db = `bench_stream_${randomBytes(4).toString('hex')}`
  const prefix = `bench-stream-${randomBytes(4).toString('hex')}:`
  await admin(`create database ${db}`)
  const url = new URL(SERVER_URL)
  url.pathname = `/${db}`
  const running = await startProductionPlinth({
    DATABASE_URL: url.toString(),
    ...(redis ? { REDIS_URL, PLINTH_REDIS_PREFIX: prefix } : {}),
  })
  try {
    const { token } = await signInNewUser(running, 'admin')
    const pending = new Map<string, number>()
    const latencies: number[] = []
    const res = await new Promise<IncomingMessage>((resolve, reject) =>
      get(
        `http://${HOST}:${running.port}/api/v1/events/stream?types=bench.*`,
        { agent: false, headers: { authorization: `Bearer ${token}` } },
        resolve,
      ).on('error', reject),
    )
    if (res.statusCode !== 200) throw new Error(`stream answered ${res.statusCode}`)
    let buffered = ''
    let done: () => void = () => {}
    const all = new Promise<void>((resolve) => (done = resolve))
    res.on('data', (chunk: Buffer) => {
      const now = performance.now()
      buffered += chunk.toString('utf8')
      for (const match of buffered.matchAll(/^id: (.+)$/gm)) {
        const sent = pending.get(match[1]!)
        if (sent === undefined) continue
        pending.delete(match[1]!)
        latencies.push(now - sent)
        if (latencies.length === EVENTS) done()
      }
      buffered = buffered.slice(buffered.lastIndexOf('\n\n') + 2)
    })
    const interval = 1000 / RATE_PER_SECOND
    const start = performance.now()
    for (let i = 0; i < EVENTS; i++) {
      const wait = start + i * interval - performance.now()
      if (wait > 0) await new Promise((r) => setTimeout(r, wait))
      const id = crypto.randomUUID()
      pending.set(id, performance.now())
      await running.plinth.context.events.emit('bench.tick', { i }, { id })
    }
    await Promise.race([
      all,
      new Promise((_, reject) =>
        setTimeout(() => reject(new Error(`${pending.size} events never arrived`)), 30_000),
      ),
    ])
    res.destroy()
    const sorted = [...latencies].sort((a, b) => a - b)
    return {
      side: name,
      events: sorted.length,
      p50: Number(percentile(sorted, 50).toFixed(2)),
      p95: Number(percentile(sorted, 95).toFixed(2)),
      p99: Number(percentile(sorted, 99).toFixed(2)),
      max: Number(sorted.at(-1)!.toFixed(2)),
    }
  } finally {
    await running.close()
    await admin(`drop database if exists ${db} with (force)`)
    if (redis) {
      const client = new Redis(REDIS_URL)
      const keys = await client.keys(`${prefix}*`)
      if (keys.length > 0) await client.del(...keys)
      client.disconnect()
    }
  }
}

try {
  const baseline = await side('in-process (baseline)', false)
  const shared = await side('through redis', true)
  console.log(`event stream: emit → message on an open stream, ${EVENTS} events at ${RATE_PER_SECOND}/s (ms)`)
  console.table([baseline, shared])
  console.log(
    JSON.stringify({
      bench: 'event-stream',
      events: EVENTS,
      baseline,
      redis: shared,
      addedP50Ms: Number((shared.p50 - baseline.p50).toFixed(2)),
    }),
  )
} catch (err) {
  console.error(`bench/event-stream failed: ${(err as Error).message}`)
  process.exit(1)
}
