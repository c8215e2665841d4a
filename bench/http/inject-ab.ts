/**
 * Plinth's own per-request CPU on `GET /api/v1`, before and after a change, in one process: each
 * tree (this checkout and the one named by BENCH_HTTP_BEFORE) builds Plinth's full stack as the
 * benchmark server does (production settings, embedded database in memory, JSON logs to
 * /dev/null), beside a bare Fastify with the same route, and `app.inject()` bursts alternate between
 * the three. The socket is left out (identical for all, and the noisiest part on a shared machine);
 * light-my-request's own cost is in all three. Prints the median process CPU per request of each.
 *
 * Usage: BENCH_HTTP_BEFORE=<dir> node bench/http/inject-ab.ts [--rounds <n>] [--burst <n>]
 */
import { join, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { parseArgs } from 'node:util'
import Fastify from 'fastify'
import { Type } from 'typebox'
import { PLINTH_VERSION } from '../../src/core/version.ts'

interface Injectable {
  inject(opts: { method: 'GET'; url: string }): Promise<{ statusCode: number; body: string }>
}
interface Tree {
  readonly name: string
  readonly app: Injectable
  close(): Promise<void>
}

const { values } = parseArgs({ options: { rounds: { type: 'string' }, burst: { type: 'string' } } })
const ROUNDS = Number(values.rounds ?? 16)
const BURST = Number(values.burst ?? 3000)
const CONCURRENCY = 100

async function plinthOf(name: string, dir: string): Promise<Tree> {
  const lib = (file: string) => pathToFileURL(join(dir, file)).href
  const { startProductionPlinth } = (await import(lib('bench/lib/plinth-child.ts'))) as {
    startProductionPlinth(env: Record<string, string>): Promise<{
      plinth: { app: Injectable }
      close(): Promise<void>
    }>
  }
  const running = await startProductionPlinth({ PLINTH_DATA_DIR: 'memory://' })
  return { name, app: running.plinth.app, close: running.close }
}

async function bare(): Promise<Tree> {
  const app = Fastify({ logger: false })
  const ApiInfo = Type.Object({
    name: Type.Literal('plinth'),
    version: Type.String(),
    api: Type.Literal('v1'),
  })
  app.get('/api/v1', { schema: { response: { 200: ApiInfo } } }, async () => ({
    name: 'plinth' as const,
    version: PLINTH_VERSION,
    api: 'v1' as const,
  }))
  await app.ready()
  return { name: 'bare', app, close: () => app.close() }
}

/** CPU microseconds per request of one burst of BURST requests, CONCURRENCY in flight. */
async function burst(tree: Tree): Promise<number> {
  let left = BURST
  const before = process.cpuUsage()
  const worker = async () => {
    while (left-- > 0) {
      const res = await tree.app.inject({ method: 'GET', url: '/api/v1' })
      if (res.statusCode !== 200) throw new Error(`${tree.name}: ${res.statusCode} ${res.body}`)
    }
  }
  await Promise.all(Array.from({ length: CONCURRENCY }, worker))
  const cpu = process.cpuUsage(before)
  return (cpu.user + cpu.system) / BURST
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2
}

const beforeDir = process.env.BENCH_HTTP_BEFORE
const trees: Tree[] = [await bare(), await plinthOf('after', resolve(import.meta.dirname, '../..'))]
if (beforeDir) trees.push(await plinthOf('before', resolve(beforeDir)))
const figures = new Map<string, number[]>(trees.map((t) => [t.name, []]))
for (const tree of trees) await burst(tree) // warm-up
for (let r = 0; r < ROUNDS; r++) for (const tree of trees) figures.get(tree.name)!.push(await burst(tree))
const result = Object.fromEntries([...figures].map(([name, xs]) => [name, Math.round(median(xs) * 10) / 10]))
console.log(`median CPU per request over ${ROUNDS} rounds of ${BURST} (us):`, result)
if (result.before !== undefined)
  console.log(
    `after/before ${(result.after! / result.before).toFixed(3)}; own cost (− bare) ${(result.before - result.bare!).toFixed(1)} -> ${(result.after! - result.bare!).toFixed(1)} us`,
  )
for (const tree of trees) await tree.close()
process.exit(0)
