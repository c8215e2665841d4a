/**
 * The cost of tracing on the HTTP path: the same route (`GET /api/v1`) served by bare Fastify, by
 * Plinth with tracing off (the default: no SDK loaded), and by Plinth with tracing on at 100 % and
 * 1 % sampling, exporting over OTLP HTTP/protobuf to a sink in this process (which answers 200 and
 * counts what arrives, as a collector would). Each server is a child process started one at a
 * time; rounds alternate the four; the table shows the median of the rounds. Exits 0 whether or
 * not the target is met; 1 when a server fails to start or stop, or answers anything but 2xx; 2
 * on bad arguments; 130 when interrupted.
 *
 * Usage: node bench/http/tracing.ts [--duration <s>] [--rounds <n>]   (or BENCH_DURATION=<s>)
 */
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { cpus, loadavg } from 'node:os'
import { fileURLToPath } from 'node:url'
import { isInterrupted, runBenchmark, startServer, stopServer } from '../lib/children.ts'
import { aggregate, load, median, round, type Sample, warmUp } from '../lib/load.ts'
import { DURATION, parseOptions, ROUNDS } from '../lib/options.ts'
import { header, roundLine, sampleRow } from '../lib/table.ts'

/** bench/http/server.ts's kind for Plinth with tracing on (importing server.ts would run it). */
const TRACED_KIND = 'plinth-traced'
const ROUTE = '/api/v1'
const HOST = '127.0.0.1'
const CONNECTIONS = 100
const WARMUP_SECONDS = 2
/** Tracing off may cost at most this share of Plinth's throughput (it should cost nothing). */
const TARGET_OFF_COST = 0.02
const SERVER_FILE = fileURLToPath(new URL('./server.ts', import.meta.url))

type Kind = 'bare' | 'off' | 'on-100%' | 'on-1%'
const KINDS: readonly Kind[] = ['bare', 'off', 'on-100%', 'on-1%']

const USAGE = `Usage: node bench/http/tracing.ts [--duration <seconds>] [--rounds <n>]

  --duration  measured seconds per run, ${DURATION.min}-${DURATION.max} (default ${DURATION.default}; BENCH_DURATION sets it too)
  --rounds    runs per server, alternating bare, off, on-100% and on-1%, ${ROUNDS.min}-${ROUNDS.max} (default ${ROUNDS.default})`

/**
 * The server's CPU seconds so far, from its own `/api/metrics` (loopback is an operator network).
 * CPU time per request is what tracing adds, and unlike throughput it hardly moves when other
 * processes load the machine.
 */
async function cpuSeconds(port: number): Promise<number> {
  const res = await fetch(`http://${HOST}:${port}/api/metrics`, { signal: AbortSignal.timeout(10_000) })
  const text = await res.text()
  const match = /^process_cpu_seconds_total (\S+)$/m.exec(text)
  if (!match) throw new Error(`no process_cpu_seconds_total in /api/metrics (${res.status})`)
  return Number(match[1])
}

/** An OTLP/HTTP endpoint that accepts every export and counts requests and bytes. */
async function startSink() {
  const counts = { requests: 0, bytes: 0 }
  const server = createServer((req, res) => {
    req.on('data', (c: Buffer) => {
      counts.bytes += c.length
    })
    req.on('end', () => {
      counts.requests++
      res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end()
    })
  })
  await new Promise<void>((resolve) => server.listen(0, HOST, resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://${HOST}:${port}`,
    counts,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}

async function main(): Promise<number> {
  const { duration, rounds } = parseOptions(process.argv.slice(2), USAGE)
  const cpuList = cpus()
  console.log(
    `bench/http tracing: GET ${ROUTE} on ${HOST}, ${CONNECTIONS} connections, ${duration} s measured after a ` +
      `${WARMUP_SECONDS} s warm-up, ${rounds} round(s) alternating ${KINDS.join(', ')}`,
  )
  const loadBefore = round(loadavg()[0]!, 2)
  console.log(
    `node ${process.version}, ${cpuList.length} CPU(s) ${cpuList[0]?.model.trim() ?? ''}, load average ${loadBefore}`,
  )
  if (loadBefore > cpuList.length / 2)
    console.log('warning: the machine is already busy; expect noisy figures (every server shares the noise)')
  console.log('')

  const sink = await startSink()
  const args: Record<Kind, string[]> = {
    bare: ['bare'],
    off: ['plinth'],
    'on-100%': [TRACED_KIND, sink.url, '1'],
    'on-1%': [TRACED_KIND, sink.url, '0.01'],
  }
  const samples: Record<Kind, Sample[]> = { bare: [], off: [], 'on-100%': [], 'on-1%': [] }
  /** Server CPU microseconds per request, per round (Plinth kinds only: bare serves no metrics). */
  const cpuUs: Record<Kind, number[]> = { bare: [], off: [], 'on-100%': [], 'on-1%': [] }
  const problems: string[] = []
  try {
    for (let r = 1; r <= rounds; r++) {
      for (const kind of KINDS) {
        const server = await startServer(SERVER_FILE, args[kind], `the ${kind} server`)
        const url = `http://${HOST}:${server.ready.port}${ROUTE}`
        try {
          await warmUp({ url }, CONNECTIONS, WARMUP_SECONDS, `${kind} warm-up, round ${r}`, problems)
          const before = kind === 'bare' ? 0 : await cpuSeconds(server.ready.port)
          const sample = await load({ url }, CONNECTIONS, duration)
          if (isInterrupted()) return 130
          samples[kind].push(sample)
          let perRequest = ''
          if (kind !== 'bare') {
            const us = (((await cpuSeconds(server.ready.port)) - before) * 1e6) / (sample.rps * duration)
            cpuUs[kind].push(us)
            perRequest = `  server CPU ${Math.round(us)} µs/request`
          }
          console.log(roundLine(r, rounds, kind, sample) + perRequest)
        } finally {
          await stopServer(server, kind, problems)
        }
      }
    }
  } finally {
    await sink.close()
  }
  if (sink.counts.requests === 0) problems.push('no span reached the OTLP sink: tracing did not export')

  const agg = Object.fromEntries(KINDS.map((k) => [k, aggregate(samples[k])])) as Record<Kind, Sample>
  for (const k of KINDS) {
    const s = agg[k]
    if (s.errors + s.non2xx > 0) problems.push(`${k}: ${s.errors} errors, ${s.non2xx} non-2xx responses`)
  }
  console.log(header('tracing', rounds))
  for (const k of KINDS) console.log(sampleRow(k, agg[k]))
  const vs = (k: Kind, base: Kind) => round(agg[k].rps / agg[base].rps, 3)
  const cpu = (k: Kind) => round(median(cpuUs[k]), 1)
  const cpuVs = (k: Kind) => round(cpu(k) / cpu('off'), 3)
  const offCost = round(1 - vs('off', 'bare') / 1, 3)
  console.log(
    `\nthroughput relative to tracing off: on-100% ${vs('on-100%', 'off').toFixed(3)}, on-1% ${vs('on-1%', 'off').toFixed(3)}`,
  )
  console.log(`plinth (tracing off) / bare: ${vs('off', 'bare').toFixed(3)}`)
  console.log(
    `server CPU per request (median): off ${cpu('off')} µs, on-100% ${cpu('on-100%')} µs (x${cpuVs('on-100%')}), on-1% ${cpu('on-1%')} µs (x${cpuVs('on-1%')})`,
  )
  console.log(
    `OTLP sink received ${sink.counts.requests} export(s), ${Math.round(sink.counts.bytes / 1024)} KiB`,
  )
  for (const problem of problems) console.error(`error: ${problem}`)
  console.log(
    JSON.stringify({
      bench: 'http-tracing',
      route: `GET ${ROUTE}`,
      connections: CONNECTIONS,
      durationSeconds: duration,
      rounds,
      aggregate: 'median',
      node: process.version,
      cpus: cpuList.length,
      loadAverageBefore: loadBefore,
      ...agg,
      cpuMicrosecondsPerRequest: { off: cpu('off'), on100: cpu('on-100%'), on1: cpu('on-1%') },
      ratios: {
        cpuOn100ToOff: cpuVs('on-100%'),
        cpuOn1ToOff: cpuVs('on-1%'),
        offToBare: vs('off', 'bare'),
        on100ToOff: vs('on-100%', 'off'),
        on1ToOff: vs('on-1%', 'off'),
      },
      offCostTarget: TARGET_OFF_COST,
      offCostNote: `tracing off loads no SDK and registers no hook: its cost is 0 by construction (test/tracing.test.ts proves no SDK module loads); ${offCost} is Plinth's whole stack against bare Fastify`,
      sink: sink.counts,
      ok: problems.length === 0,
    }),
  )
  return problems.length === 0 ? 0 : 1
}

await runBenchmark(main, USAGE)
