/**
 * Reads a V8 CPU profile (`--cpu-prof`, e.g. from `BENCH_HTTP_CPU_PROF=<dir>` of the hot part) and
 * prints where a server's busy CPU went during its load window: the longest stretch in which the
 * thread was mostly busy (boot and shutdown left out), as shares of the busy samples.
 *
 * Two views: each sample attributed to the nearest frame that belongs to a part of Plinth or to a
 * library (the rest is Fastify's core, Node's HTTP and the socket), and the top functions by self
 * time. Usage: node bench/http/profile.ts <file.cpuprofile> [--top <n>] [--requests <n>]
 * (`--requests`: responses served in the window, to print microseconds per request as well).
 */
import { readFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { FASTIFY_CORE_PACKAGES, packageOf } from './packages.ts'

interface CallFrame {
  readonly functionName: string
  readonly url: string
  readonly lineNumber: number
}
interface ProfileNode {
  readonly id: number
  readonly callFrame: CallFrame
  readonly children?: readonly number[]
}
interface Profile {
  readonly nodes: readonly ProfileNode[]
  readonly samples: readonly number[]
  readonly timeDeltas: readonly number[]
}

/** The part a frame belongs to, or undefined for pass-through code (Fastify core, Node internals). */
export function ownerOf(frame: CallFrame): string | undefined {
  const { url, functionName } = frame
  const plugin = /\/src\/http\/plugins\/([\w-]+)\.ts$/.exec(url)
  if (plugin) return `plinth ${plugin[1]}`
  const src = /\/src\/(.+)\.ts$/.exec(url)
  if (src) return `plinth ${src[1]}`
  const name = packageOf(url)
  if (name) {
    if (FASTIFY_CORE_PACKAGES.has(name)) return undefined
    if (
      name === 'sonic-boom' ||
      name.startsWith('pino') ||
      name === 'fast-redact' ||
      name === 'quick-format-unescaped'
    )
      return 'pino (logger)'
    return name
  }
  if (functionName === '(garbage collector)') return 'GC'
  return undefined
}

/** Fastify's own request flow (hook runners, routing, reply sending), as opposed to the helpers plugins call (`reply.header`). */
function isContinuation(frame: CallFrame): boolean {
  if (!/\/node_modules\/(fastify|find-my-way)\//.test(frame.url)) return false
  return !/^(Reply\.|get |set )?(header|headers|hasHeader|getHeader|removeHeader|code|status|type|routeOptions|elapsedTime|ip|id|log)$/.test(
    frame.functionName,
  )
}

/** Pass-through code by its kind: where a sample with no owner is counted. */
function kindOf(frame: CallFrame): string {
  const { url, functionName } = frame
  if (FASTIFY_CORE_PACKAGES.has(packageOf(url) ?? '')) return 'fastify core'
  if (functionName === '(program)') return '(program)'
  if (
    /^node:(net|stream|internal\/stream|internal\/net)|writeUtf8String|writeLatin1String|writeBuffer|writev/.test(
      url || functionName,
    )
  )
    return 'socket writes'
  if (url.startsWith('node:') || url === '') return 'node (http, timers, native)'
  return url
}

function main(): void {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: { top: { type: 'string' }, requests: { type: 'string' } },
  })
  const file = positionals[0]
  if (!file)
    throw new Error('usage: node bench/http/profile.ts <file.cpuprofile> [--top <n>] [--requests <n>]')
  const top = Number(values.top ?? 40)
  const requests = values.requests ? Number(values.requests) : undefined
  const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile
  const byId = new Map<number, ProfileNode>()
  const parent = new Map<number, number>()
  for (const node of profile.nodes) {
    byId.set(node.id, node)
    for (const child of node.children ?? []) parent.set(child, node.id)
  }

  // Sample times, then the load window: the longest run of 250 ms buckets at least 60 % busy.
  const times: number[] = []
  let t = 0
  for (const delta of profile.timeDeltas) {
    t += delta
    times.push(t)
  }
  const idle = (id: number) => byId.get(id)!.callFrame.functionName === '(idle)'
  const BUCKET = 250_000
  const buckets = new Map<number, { busy: number; all: number }>()
  profile.samples.forEach((id, i) => {
    const b = Math.floor(times[i]! / BUCKET)
    const entry = buckets.get(b) ?? { busy: 0, all: 0 }
    const dt = profile.timeDeltas[i + 1] ?? 0
    entry.all += dt
    if (!idle(id)) entry.busy += dt
    buckets.set(b, entry)
  })
  let best: [number, number] = [0, -1]
  let start: number | undefined
  const last = Math.max(...buckets.keys())
  for (let b = 0; b <= last + 1; b++) {
    const e = buckets.get(b)
    const busy = e !== undefined && e.all > 0 && e.busy / e.all >= 0.6
    if (busy && start === undefined) start = b
    if (!busy && start !== undefined) {
      if (b - 1 - start > best[1] - best[0]) best = [start, b - 1]
      start = undefined
    }
  }
  const from = best[0] * BUCKET
  const to = (best[1] + 1) * BUCKET

  const owners = new Map<string, number>()
  const self = new Map<number, number>()
  let busyUs = 0
  let windowUs = 0
  profile.samples.forEach((id, i) => {
    const at = times[i]!
    if (at < from || at >= to) return
    const dt = profile.timeDeltas[i + 1] ?? 0
    windowUs += dt
    if (idle(id)) return
    busyUs += dt
    self.set(id, (self.get(id) ?? 0) + dt)
    // The nearest owner frame, unless Fastify's request flow lies in between: callback-style hooks
    // nest (a hook's done() runs the next hook, the handler and the reply), so whatever runs after
    // a hook would otherwise land on that hook.
    let owner: string | undefined
    let viaFastify = false
    for (let n: number | undefined = id; n !== undefined; n = parent.get(n)) {
      const frame = byId.get(n)!.callFrame
      owner = ownerOf(frame)
      if (owner !== undefined) break
      if (isContinuation(frame)) {
        viaFastify = true
        break
      }
    }
    if (owner === undefined) {
      const leaf = kindOf(byId.get(id)!.callFrame)
      owner = leaf === 'socket writes' || leaf === '(program)' || !viaFastify ? leaf : 'fastify core'
    }
    owners.set(owner, (owners.get(owner) ?? 0) + dt)
  })

  const pct = (us: number) => `${((100 * us) / busyUs).toFixed(1).padStart(5)} %`
  const perRequest = (us: number) => (requests ? `  ${(us / requests).toFixed(2).padStart(7)} us/req` : '')
  console.log(
    `${file}\nload window ${(from / 1e6).toFixed(2)}-${(to / 1e6).toFixed(2)} s, busy ${(busyUs / 1e6).toFixed(2)} s of ${(windowUs / 1e6).toFixed(2)} s${requests ? `, ${requests} requests: ${(busyUs / requests).toFixed(1)} us busy/request` : ''}\n`,
  )
  console.log('attributed to the nearest owner frame')
  for (const [owner, us] of [...owners].sort((a, b) => b[1] - a[1]))
    console.log(`  ${pct(us)}${perRequest(us)}  ${owner}`)

  // Self time by function (merged over the nodes of one function).
  const fns = new Map<string, number>()
  for (const [id, us] of self) {
    const f = byId.get(id)!.callFrame
    const key = `${f.functionName || '(anonymous)'} ${f.url.replace(/^.*\/(node_modules|src)\//, '$1/')}:${f.lineNumber + 1}`
    fns.set(key, (fns.get(key) ?? 0) + us)
  }
  console.log(`\ntop ${top} functions by self time`)
  for (const [key, us] of [...fns].sort((a, b) => b[1] - a[1]).slice(0, top))
    console.log(`  ${pct(us)}${perRequest(us)}  ${key}`)
}

main()
