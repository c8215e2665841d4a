/**
 * Files benchmark, two comparisons measured in the same run:
 *
 * 1. Upload → thumbnail, three ways on the same images, rounds alternating, all in this process
 *    (requests by `inject`, no sockets):
 *    - raw sharp: the 256 px WebP thumbnail made from the bytes in memory, nothing else;
 *    - plain app: Fastify + @fastify/multipart receiving the upload, writing it to disk (fsync),
 *      sharp making the thumbnail from the file, writing it, then @fastify/static serving it;
 *    - Plinth: `POST /api/v1/files` (bearer auth, multipart streamed and hashed, type from magic
 *      bytes, the whole image decoded, which also makes the thumbnail; quota, de-duplication, the
 *      object and thumbnail stored, fsync, the row and the variants job in one transaction on
 *      the embedded PostgreSQL) then `GET ?variant=thumb`. The job's other variant (medium) is
 *      made later by a worker and is not counted (this instance is an api role).
 *    Figures: images per second (wall clock) and CPU milliseconds per image (every thread of this
 *    process: sharp's, the embedded database's, the GC's), which a loaded machine disturbs less.
 * 2. Download: a 256 KiB public file through Plinth (`GET /api/v1/files/{id}`: lookup, access
 *    check, headers, stream from disk) beside plain Fastify + @fastify/static serving the same
 *    bytes, each in its own child process, driven by autocannon on loopback; rounds alternate.
 *    Figures: requests per second and the server's CPU milliseconds per request (from /proc).
 *
 * Exits 0 whether or not the goals (≥ 0.8 of the baseline) are met; 1 on a failure.
 * Usage: node bench/files/run.ts [--duration <s>] [--rounds <n>]
 */
import { randomUUID } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { open, writeFile } from 'node:fs/promises'
import { cpus, loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import multipartPlugin from '@fastify/multipart'
import fastifyStatic from '@fastify/static'
import Fastify, { type FastifyInstance } from 'fastify'
import sharp from 'sharp'
import { createPlinth } from '../../src/app/create-plinth.ts'
import { loadConfig } from '../../src/config/load-config.ts'
import { createUserDirect } from '../../src/modules/accounts/bootstrap-admin.ts'
import { createLogger, logDestination } from '../../src/observability/logger.ts'
import { isInterrupted, runBenchmark, startServer } from '../lib/children.ts'
import { aggregate, load, round, type Sample } from '../lib/load.ts'
import { parseOptions } from '../lib/options.ts'
import { header, num, roundLine, sampleRow } from '../lib/table.ts'

const HOST = '127.0.0.1'
const IMAGES = 8
const CONNECTIONS = 50
const WARMUP_SECONDS = 2
const GOAL = 0.8
const SERVER_FILE = fileURLToPath(new URL('./server.ts', import.meta.url))
const PASSWORD = 'violet-kettle-harbour-42'

const USAGE = `Usage: node bench/files/run.ts [--duration <seconds>] [--rounds <n>]`

async function images(): Promise<Buffer[]> {
  const out: Buffer[] = []
  for (let n = 0; n < IMAGES; n++) {
    const width = 1600
    const height = 1200
    const raw = Buffer.alloc(width * height * 3)
    for (let i = 0; i < raw.length; i++) raw[i] = (i * (7 + n) + n * 13) % 251
    out.push(
      await sharp(raw, { raw: { width, height, channels: 3 } })
        .jpeg({ quality: 85 })
        .toBuffer(),
    )
  }
  return out
}

function multipart(name: string, content: Buffer) {
  const boundary = `----bench-${randomUUID()}`
  const payload = Buffer.concat([
    Buffer.from(
      `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${name}"\r\nContent-Type: image/jpeg\r\n\r\n`,
    ),
    content,
    Buffer.from(`\r\n--${boundary}--\r\n`),
  ])
  return { payload, contentType: `multipart/form-data; boundary=${boundary}` }
}

const thumbnail = (input: Buffer | string) =>
  sharp(input).rotate().resize({ width: 256, height: 256, fit: 'inside' }).webp({ quality: 80 }).toBuffer()

/** Fastify + @fastify/multipart + sharp + @fastify/static, nothing else: upload, thumbnail, serve. */
async function plainApp(dir: string): Promise<FastifyInstance> {
  const app = Fastify({ logger: false })
  await app.register(multipartPlugin, { limits: { fileSize: 50 * 1024 * 1024 } })
  await app.register(fastifyStatic, { root: dir, prefix: '/t/' })
  app.post('/upload', async (request) => {
    const part = await request.file()
    if (!part) throw new Error('no file')
    const id = randomUUID()
    const path = join(dir, id)
    const handle = await open(path, 'wx', 0o600)
    try {
      for await (const chunk of part.file) await handle.write(chunk as Buffer)
      await handle.sync()
    } finally {
      await handle.close()
    }
    await writeFile(join(dir, `${id}.webp`), await thumbnail(path))
    return { url: `/t/${id}.webp` }
  })
  return app
}

/** CPU milliseconds this process used (all threads) since `from`. */
const cpuSince = (from: NodeJS.CpuUsage) => {
  const used = process.cpuUsage(from)
  return (used.user + used.system) / 1000
}

interface Side {
  readonly rate: number
  readonly cpu: number
}

/** Upload → thumbnail: raw sharp, the plain app and Plinth on the same images, rounds alternating. */
async function uploadThumbnail(rounds: number): Promise<Record<'raw' | 'plain' | 'plinth', Side>> {
  const inputs = await images()
  const dir = mkdtempSync(join(tmpdir(), 'plinth-bench-thumbs-'))
  const plainDir = mkdtempSync(join(tmpdir(), 'plinth-bench-plain-'))
  const config = loadConfig({
    env: {
      PLINTH_ENV: 'test',
      PLINTH_DATA_DIR: 'memory://',
      PLINTH_FILES_DIR: dir,
      PLINTH_LOG_LEVEL: 'silent',
      PLINTH_ROLE: 'api',
      PLINTH_RATE_LIMIT_UPLOAD: '0',
      PLINTH_RATE_LIMIT_API: '0',
      PLINTH_BACKUP_CRON: 'off',
      PLINTH_FILES_SWEEP_CRON: 'off',
      PLINTH_MAX_EVENT_LOOP_DELAY: '0',
    },
    envFile: false,
  })
  const plinth = await createPlinth({ config, logger: createLogger(config, logDestination('/dev/null')) })
  const plain = await plainApp(plainDir)
  const sides = { raw: [] as Side[], plain: [] as Side[], plinth: [] as Side[] }
  const time = async (run: () => Promise<void>): Promise<Side> => {
    const cpu = process.cpuUsage()
    const started = performance.now()
    await run()
    const seconds = (performance.now() - started) / 1000
    return { rate: inputs.length / seconds, cpu: cpuSince(cpu) / inputs.length }
  }
  try {
    await plinth.prepare()
    await plain.ready()
    for (let r = 1; r <= rounds; r++) {
      sides.raw.push(
        await time(async () => {
          for (const input of inputs) await thumbnail(input)
        }),
      )

      sides.plain.push(
        await time(async () => {
          for (const [i, input] of inputs.entries()) {
            const body = multipart(`image-${i}.jpg`, input)
            const up = await plain.inject({
              method: 'POST',
              url: '/upload',
              headers: { 'content-type': body.contentType },
              payload: body.payload,
            })
            if (up.statusCode !== 200) throw new Error(`plain upload answered ${up.statusCode}: ${up.body}`)
            const thumb = await plain.inject({ url: up.json().url })
            if (thumb.statusCode !== 200) throw new Error(`plain thumbnail answered ${thumb.statusCode}`)
          }
        }),
      )

      // A fresh user per round: its uploads are new bytes to it (no de-duplication shortcut).
      const email = `bench-${randomUUID()}@example.com`
      await createUserDirect(plinth.context, { email, password: PASSWORD, role: 'member' })
      const login = await plinth.app.inject({
        method: 'POST',
        url: '/api/v1/auth/login',
        payload: { email, password: PASSWORD },
      })
      const auth = { authorization: `Bearer ${login.json().token}` }
      sides.plinth.push(
        await time(async () => {
          for (const [i, input] of inputs.entries()) {
            const body = multipart(`image-${i}.jpg`, input)
            const up = await plinth.app.inject({
              method: 'POST',
              url: '/api/v1/files',
              headers: { ...auth, 'content-type': body.contentType },
              payload: body.payload,
            })
            if (up.statusCode !== 201) throw new Error(`upload answered ${up.statusCode}: ${up.body}`)
            const thumb = await plinth.app.inject({
              url: `${up.json().files[0].url}?variant=thumb`,
              headers: auth,
            })
            if (thumb.statusCode !== 200)
              throw new Error(`thumbnail answered ${thumb.statusCode}: ${thumb.body}`)
          }
        }),
      )
      const line = (name: string, side: Side) =>
        `${name} ${num(round(side.rate, 2))} img/s ${num(round(side.cpu, 1))} CPU ms/img`
      console.log(
        `round ${r}/${rounds} thumbnails  ${line('raw sharp', sides.raw.at(-1)!)}  ${line('plain app', sides.plain.at(-1)!)}  ${line('plinth', sides.plinth.at(-1)!)}`,
      )
    }
    const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)]!
    const summary = (v: Side[]): Side => ({
      rate: median(v.map((s) => s.rate)),
      cpu: median(v.map((s) => s.cpu)),
    })
    return { raw: summary(sides.raw), plain: summary(sides.plain), plinth: summary(sides.plinth) }
  } finally {
    await plinth.shutdown()
    await plain.close()
    rmSync(dir, { recursive: true, force: true })
    rmSync(plainDir, { recursive: true, force: true })
  }
}

/** CPU milliseconds a child process has used so far (all its threads; Linux /proc), or NaN elsewhere. */
function childCpu(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS
  } catch {
    return Number.NaN
  }
}
const CLOCK_TICKS = 100

async function downloads(
  duration: number,
  rounds: number,
): Promise<Record<'static' | 'plinth', Sample & { cpuPerRequest: number }>> {
  const samples: Record<'static' | 'plinth', Sample[]> = { static: [], plinth: [] }
  const cpu: Record<'static' | 'plinth', number[]> = { static: [], plinth: [] }
  for (let r = 1; r <= rounds; r++) {
    for (const kind of ['static', 'plinth'] as const) {
      const server = await startServer<{ port: number; path: string; pid: number }>(
        SERVER_FILE,
        [kind],
        `the ${kind} server`,
      )
      try {
        const url = `http://${HOST}:${server.ready.port}${server.ready.path}`
        await load({ url }, CONNECTIONS, WARMUP_SECONDS)
        const cpuBefore = childCpu(server.ready.pid)
        const sample = await load({ url }, CONNECTIONS, duration)
        const perRequest = (childCpu(server.ready.pid) - cpuBefore) / (sample.rps * duration)
        if (isInterrupted()) throw new Error('interrupted')
        if (sample.errors + sample.non2xx > 0)
          throw new Error(`${kind}: ${sample.errors} errors, ${sample.non2xx} non-2xx`)
        samples[kind].push(sample)
        cpu[kind].push(perRequest)
        console.log(`${roundLine(r, rounds, kind, sample)}  server CPU ${num(round(perRequest, 3))} ms/req`)
      } finally {
        await server.stop()
      }
    }
  }
  const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)]!
  return {
    static: { ...aggregate(samples.static), cpuPerRequest: median(cpu.static) },
    plinth: { ...aggregate(samples.plinth), cpuPerRequest: median(cpu.plinth) },
  }
}

async function main(): Promise<number> {
  const { duration, rounds } = parseOptions(process.argv.slice(2), USAGE)
  const cpuList = cpus()
  console.log(
    `bench/files: ${IMAGES} JPEG images 1600×1200 → 256 px WebP thumbnails; 256 KiB downloads with ${CONNECTIONS} connections, ${duration} s per run, ${rounds} round(s)`,
  )
  console.log(`node ${process.version}, ${cpuList.length} CPU(s), load average ${round(loadavg()[0]!, 2)}\n`)

  const thumbs = await uploadThumbnail(rounds)
  const dl = await downloads(duration, rounds)

  const verdict = (ratio: number) =>
    `${ratio.toFixed(2)} (goal ≥ ${GOAL}: ${ratio >= GOAL ? 'met' : 'NOT met'})`
  console.log(`\nupload → thumbnail (median of ${rounds})   images/s   CPU ms/image`)
  for (const [name, side] of [
    ['raw sharp (thumbnail only)', thumbs.raw],
    ['plain app (upload, disk, sharp, serve)', thumbs.plain],
    ['plinth (everything above and more)', thumbs.plinth],
  ] as const)
    console.log(
      `  ${name.padEnd(40)} ${num(round(side.rate, 2)).padStart(8)}   ${num(round(side.cpu, 1)).padStart(10)}`,
    )
  console.log(
    `  plinth / raw sharp: ${verdict(thumbs.plinth.rate / thumbs.raw.rate)} by images/s, ${verdict(thumbs.raw.cpu / thumbs.plinth.cpu)} by CPU`,
  )
  console.log(
    `  plinth / plain app: ${verdict(thumbs.plinth.rate / thumbs.plain.rate)} by images/s, ${verdict(thumbs.plain.cpu / thumbs.plinth.cpu)} by CPU`,
  )

  console.log(header('download', rounds))
  console.log(`${sampleRow('static', dl.static)}   CPU ${num(round(dl.static.cpuPerRequest, 3))} ms/req`)
  console.log(`${sampleRow('plinth', dl.plinth)}   CPU ${num(round(dl.plinth.cpuPerRequest, 3))} ms/req`)
  console.log(
    `plinth / @fastify/static: ${verdict(dl.plinth.rps / dl.static.rps)} by requests/s, ${verdict(dl.static.cpuPerRequest / dl.plinth.cpuPerRequest)} by server CPU per request`,
  )
  console.log(
    `load average after: ${round(loadavg()[0]!, 2)} (a shared machine makes absolute figures noisy; the ratios share the noise)`,
  )
  return 0
}

await runBenchmark(main, USAGE)
