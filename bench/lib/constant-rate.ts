/**
 * An open-loop, constant-rate load generator: `rate` requests per second spread evenly over time
 * (request i is due at start + i/rate), sent over `connections` keep-alive HTTP/1.1 connections, one
 * request in flight per connection. A request whose due time comes while every connection is busy
 * waits for the next free one, and its latency is counted **from its due time**, not from when it
 * was finally written: queueing anywhere (in the server, the kernel, or here) shows in the
 * percentiles instead of silently lowering the offered load (no "coordinated omission").
 *
 * Why not autocannon's `overallRate`: autocannon gives each connection a budget of `rate /
 * connections` requests per one-second window, reset by a per-connection interval started at the
 * same instant for all of them. At 1,000 connections and 1,000 req/s, every connection sends its one
 * request at the start of each second: a synchronised burst of 1,000 requests, then nothing — a
 * thundering herd that measures how long the server takes to drain 1,000 requests, not how a
 * thousand users spread over time are served.
 *
 * The client is deliberately small (raw sockets, a response parser that needs `content-length`,
 * which Fastify always sends for these routes): at a few thousand requests per second it costs a
 * fraction of a core, measured and returned as `clientCpu`.
 */
import { connect, type Socket } from 'node:net'
import { createHistogram } from 'node:perf_hooks'
import type { Request } from './load.ts'

export interface RateSample {
  /** Requests per second offered (the schedule). */
  readonly offered: number
  /** Responses per second actually completed over the run. */
  readonly rps: number
  readonly p50Ms: number
  readonly p99Ms: number
  readonly maxMs: number
  /** Requests due whose response never came within the timeout, and socket errors. */
  readonly errors: number
  readonly non2xx: number
  /** Responses other than 2xx by status code ({ "503": 21 }). */
  readonly statuses: Record<string, number>
  readonly count: number
  /** Cores the load generator kept busy. */
  readonly clientCpu: number
}

export interface RateOptions {
  readonly rate: number
  readonly connections: number
  readonly seconds: number
  /** A response later than this (from its due time) counts as an error. Default 10 s. */
  readonly timeoutMs?: number
}

interface Conn {
  socket: Socket
  buffer: Buffer
  /** Due time (performance.now()) of the request in flight, or undefined when idle. */
  due: number | undefined
  alive: boolean
}

let active: { stop: () => void } | undefined

/** Ends a running constant-rate load early (what was measured so far is returned). */
export function stopRateLoad(): void {
  active?.stop()
}

function requestBytes(url: URL, request: Request): Buffer {
  const body = request.body ?? ''
  const headers: Record<string, string> = {
    host: url.host,
    connection: 'keep-alive',
    ...(request.headers ?? {}),
  }
  if (request.body !== undefined) headers['content-length'] = String(Buffer.byteLength(body))
  const head = Object.entries(headers)
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('')
  return Buffer.from(`${request.method ?? 'GET'} ${url.pathname}${url.search} HTTP/1.1\r\n${head}\r\n${body}`)
}

/**
 * The length of the first complete response in `buf` and its status, or undefined when it is not
 * complete yet.
 */
function parseResponse(buf: Buffer): { length: number; status: number } | undefined {
  const end = buf.indexOf('\r\n\r\n')
  if (end < 0) return undefined
  const head = buf.toString('latin1', 0, end)
  const status = Number(head.slice(9, 12))
  const match = /\r\ncontent-length:\s*(\d+)/i.exec(head)
  if (!match) throw new Error(`response without content-length: ${head.split('\r\n')[0]}`)
  const length = end + 4 + Number(match[1])
  return buf.length >= length ? { length, status } : undefined
}

/** Runs the schedule; resolves once every request sent has been answered or timed out. */
export async function rateLoad(request: Request, options: RateOptions): Promise<RateSample> {
  const url = new URL(request.url)
  const bytes = requestBytes(url, request)
  const timeoutMs = options.timeoutMs ?? 10_000
  const latencyUs = createHistogram()
  let errors = 0
  let non2xx = 0
  const statuses: Record<string, number> = {}
  let done = 0
  let sent = 0
  let stopped = false

  const idle: Conn[] = []
  const backlog: number[] = []
  const conns: Conn[] = []
  const total = Math.round(options.rate * options.seconds)

  const complete = (conn: Conn, status: number) => {
    const due = conn.due!
    conn.due = undefined
    done++
    latencyUs.record(Math.max(1, Math.round((performance.now() - due) * 1000)))
    if (status < 200 || status >= 300) {
      non2xx++
      statuses[status] = (statuses[status] ?? 0) + 1
    }
    dispatch(conn)
  }
  const fail = (conn: Conn) => {
    if (!conn.alive) return
    conn.alive = false
    if (conn.due !== undefined) {
      conn.due = undefined
      errors++
      done++
    }
    conn.socket.destroy()
  }
  /** Gives an idle connection the oldest waiting request, or parks it. */
  const dispatch = (conn: Conn) => {
    if (!conn.alive) return
    const due = backlog.shift()
    if (due === undefined) {
      idle.push(conn)
      return
    }
    conn.due = due
    conn.socket.write(bytes)
  }

  await Promise.all(
    Array.from(
      { length: options.connections },
      () =>
        new Promise<void>((resolve, reject) => {
          const socket = connect({ host: url.hostname, port: Number(url.port), noDelay: true })
          const conn: Conn = { socket, buffer: Buffer.alloc(0), due: undefined, alive: true }
          socket.once('connect', () => {
            conns.push(conn)
            idle.push(conn)
            resolve()
          })
          socket.once('error', (err) => {
            if (!conns.includes(conn)) reject(err)
            fail(conn)
          })
          socket.on('close', () => fail(conn))
          socket.on('data', (chunk: Buffer) => {
            conn.buffer = conn.buffer.length === 0 ? chunk : Buffer.concat([conn.buffer, chunk])
            for (;;) {
              let parsed: { length: number; status: number } | undefined
              try {
                parsed = parseResponse(conn.buffer)
              } catch {
                fail(conn)
                return
              }
              if (!parsed) return
              conn.buffer = conn.buffer.subarray(parsed.length)
              if (conn.due !== undefined) complete(conn, parsed.status)
            }
          })
        }),
    ),
  )

  const cpuBefore = process.cpuUsage()
  const start = performance.now()
  await new Promise<void>((resolve) => {
    const tick = () => {
      if (stopped) return resolve()
      const now = performance.now()
      const dueCount = Math.min(total, Math.floor(((now - start) / 1000) * options.rate) + 1)
      while (sent < dueCount) {
        const due = start + (sent * 1000) / options.rate
        sent++
        const conn = idle.pop()
        if (conn?.alive) {
          conn.due = due
          conn.socket.write(bytes)
        } else backlog.push(due)
      }
      if (sent >= total) return resolve()
      setTimeout(tick, 1)
    }
    active = { stop: () => (stopped = true) }
    tick()
  })
  // Wait for the answers still due, up to the timeout after the last send.
  const deadline = performance.now() + timeoutMs
  await new Promise<void>((resolve) => {
    const check = () => {
      if (stopped || done >= sent || performance.now() > deadline) return resolve()
      setTimeout(check, 5)
    }
    active = { stop: () => (stopped = true) }
    check()
  })
  active = undefined
  const elapsed = performance.now() - start
  const cpu = process.cpuUsage(cpuBefore)
  // Whatever is still unanswered (in flight or never sent for want of a connection) timed out.
  errors += sent - done
  for (const conn of conns) {
    conn.alive = false
    conn.socket.destroy()
  }
  return {
    offered: options.rate,
    rps: Math.round((done / elapsed) * 1000),
    p50Ms: latencyUs.count > 0 ? latencyUs.percentile(50) / 1000 : 0,
    p99Ms: latencyUs.count > 0 ? latencyUs.percentile(99) / 1000 : 0,
    maxMs: latencyUs.count > 0 ? latencyUs.max / 1000 : 0,
    errors,
    non2xx,
    statuses,
    count: latencyUs.count,
    clientCpu: (cpu.user + cpu.system) / 1000 / elapsed,
  }
}
