/**
 * Where a server's CPU went, kernel included, from Linux `perf` (`BENCH_HTTP_PERF=<dir>` of the hot
 * part records each server's main thread; decision 0049). V8's `--cpu-prof` (profile.ts) samples by
 * a timer signal and charges a thread that was inside a system call, or descheduled around one, to
 * the JavaScript frame it stopped in: on this project's VMs it put ~55 % of Plinth's main thread in
 * the socket write, where perf's kernel stacks measure ~26 %. perf counts CPU time only and sees
 * the kernel's own frames, so the split between the kernel, Node, Fastify and Plinth is the true one.
 *
 * A sample goes to the first of: a system call (the socket write, read, `epoll_wait`), the kernel,
 * V8's garbage collector, llhttp's C parser with no JavaScript above it, then the innermost
 * JavaScript frame's owner (a Plinth file, a package, Fastify's core, or Node's own library by
 * area); builtins and C++ called from JavaScript count for that frame. JavaScript frames are named
 * through the map file `node --perf-basic-prof` writes (/tmp/perf-<pid>.map).
 *
 * Usage: node bench/http/perf.ts <perf.data> [--requests <n>] [--top <n>]
 */
import { execFileSync } from 'node:child_process'
import { copyFileSync, existsSync, readdirSync, rmSync } from 'node:fs'
import { basename, dirname, join } from 'node:path'
import { parseArgs } from 'node:util'
import { FASTIFY_CORE_PACKAGES, packageOf } from './packages.ts'

export interface Attribution {
  /** CPU time sampled, in nanoseconds (the sum of the samples' periods). */
  readonly totalNs: number
  /** Nanoseconds per part, heaviest first. */
  readonly parts: readonly (readonly [string, number])[]
}

/** The owner of one `perf script` frame line that is a JavaScript frame, else undefined. */
export function ownerOfFrame(frame: string): string | undefined {
  if (!frame.includes('JS:')) return undefined
  const src = /\/src\/(\S+?)\.ts\b/.exec(frame)
  if (src) return `plinth ${src[1]}`
  const pkg = packageOf(frame)
  if (pkg) return FASTIFY_CORE_PACKAGES.has(pkg) ? 'fastify core' : pkg
  const lib = /\bnode:([\w/]+)/.exec(frame)
  if (!lib) return 'other JavaScript'
  const file = lib[1]!
  if (/^_http_(outgoing|server)$/.test(file)) return 'node: http response and server'
  if (/^_http_(common|incoming)$/.test(file)) return 'node: http request'
  if (/stream|^net$/.test(file)) return 'node: streams and sockets'
  if (/task_queues|timers|async/.test(file)) return 'node: ticks, timers, async context'
  return `node: ${file.replace(/^internal\//, '')}`
}

/** The part one sample (its frames, innermost first) is charged to. */
export function partOfSample(frames: readonly string[]): string {
  const any = (re: RegExp) => frames.some((f) => re.test(f))
  if (any(/\bksys_write\b|\bksys_writev\b|\b__x64_sys_writev?\b/)) return 'kernel: socket write'
  if (any(/\bksys_read\b|\b__x64_sys_readv?\b/)) return 'kernel: socket read'
  if (any(/epoll_wait|epoll_pwait/)) return 'kernel: epoll'
  if (frames[0]?.includes('[kernel.kallsyms]')) return 'kernel: other'
  if (any(/v8::internal::(Heap|Scavenger|MarkCompact|Sweeper|MinorMarkSweep|ConcurrentMarking)/))
    return 'garbage collector'
  for (const frame of frames) {
    const owner = ownerOfFrame(frame)
    if (owner) return owner
  }
  if (any(/llhttp__internal/)) return 'node: llhttp (C)'
  return 'native (libuv, C++, libc)'
}

/**
 * Attributes the samples of `perf script` output (the default format: a header line per sample
 * with its period, then one indented frame line each, innermost first, a blank line between
 * samples).
 */
export function attributePerfScript(text: string): Attribution {
  const parts = new Map<string, number>()
  let totalNs = 0
  let period = 0
  let frames: string[] = []
  const flush = () => {
    if (frames.length > 0 && period > 0) {
      const part = partOfSample(frames)
      parts.set(part, (parts.get(part) ?? 0) + period)
      totalNs += period
    }
    frames = []
    period = 0
  }
  for (const line of text.split('\n')) {
    if (line.trim() === '') flush()
    else if (/^\s/.test(line)) frames.push(line.trim())
    else {
      flush()
      // "node 8150 [001] 1234.567890:     250000 cpu-clock:ppp: " — the period precedes the event.
      const m = /:\s+(\d+)\s+[\w-]+(?::\w*)?:\s*$/.exec(line)
      period = m ? Number(m[1]) : 0
    }
  }
  flush()
  return { totalNs, parts: [...parts].sort((a, b) => b[1] - a[1]) }
}

/** The map `node --perf-basic-prof` wrote for process `pid`, where `perf script` looks for it. */
const mapOf = (pid: number | string) => `/tmp/perf-${pid}.map`

/**
 * Moves process `pid`'s symbol map (gone with its process: /tmp is shared) to `<stem>.perf-<pid>.map`,
 * beside its recording `<stem>.data`, so that the recording can be read again later.
 */
export function keepPerfMap(pid: number, stem: string): void {
  if (!existsSync(mapOf(pid))) return
  // Copied, not renamed: the directory may be on another file system than /tmp.
  copyFileSync(mapOf(pid), `${stem}.perf-${pid}.map`)
  rmSync(mapOf(pid), { force: true })
}

/**
 * Removes the code log V8 writes beside `--perf-basic-prof` (`isolate-<address>-<pid>-v8.log`, in the
 * process's working directory `dir`) for process `pid`: the map file has what perf needs.
 */
export function removeV8Logs(pid: number, dir = process.cwd()): void {
  for (const name of readdirSync(dir))
    if (name.startsWith('isolate-') && name.endsWith(`-${pid}-v8.log`))
      rmSync(join(dir, name), { force: true })
}

/**
 * Reads `perf.data` with `perf script` and attributes it. A map kept beside it (`keepPerfMap`) is put
 * back in /tmp for the read when its process's own is gone, so JavaScript frames keep their names.
 */
export function attributePerfData(file: string): Attribution {
  const stem = basename(file).replace(/\.data$/, '')
  const kept = readdirSync(dirname(file) || '.')
    .map((name) => ({
      name,
      pid: name.startsWith(`${stem}.perf-`)
        ? /^\.perf-(\d+)\.map$/.exec(name.slice(stem.length))?.[1]
        : undefined,
    }))
    .filter((m): m is { name: string; pid: string } => m.pid !== undefined && !existsSync(mapOf(m.pid)))
  for (const m of kept) copyFileSync(join(dirname(file), m.name), mapOf(m.pid))
  try {
    const text = execFileSync('perf', ['script', '-i', file], {
      encoding: 'utf8',
      maxBuffer: 1 << 30,
      stdio: ['ignore', 'pipe', 'ignore'],
    })
    return attributePerfScript(text)
  } finally {
    for (const m of kept) rmSync(mapOf(m.pid), { force: true })
  }
}

/** Lines of `attribution` per request (µs) and as shares, the `top` heaviest parts. */
export function attributionLines(attribution: Attribution, requests: number | undefined, top = 20): string[] {
  const { totalNs, parts } = attribution
  if (totalNs === 0) return ['  (no samples)']
  const lines = parts.slice(0, top).map(([part, ns]) => {
    const share = `${((100 * ns) / totalNs).toFixed(1).padStart(5)} %`
    const us = requests ? `${(ns / requests / 1000).toFixed(2).padStart(7)} us/request  ` : ''
    return `  ${share}  ${us}${part}`
  })
  const total = requests ? `, ${(totalNs / requests / 1000).toFixed(2)} us per request` : ''
  return [`  main thread: ${(totalNs / 1e9).toFixed(2)} s of CPU sampled${total}`, ...lines]
}

function main(): void {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: { requests: { type: 'string' }, top: { type: 'string' } },
  })
  const file = positionals[0]
  if (!file) throw new Error('usage: node bench/http/perf.ts <perf.data> [--requests <n>] [--top <n>]')
  const requests = values.requests ? Number(values.requests) : undefined
  for (const line of attributionLines(attributePerfData(file), requests, Number(values.top ?? 30)))
    console.log(line)
}

if (import.meta.main) main()
