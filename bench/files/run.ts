/**
 * Files benchmark, two comparisons measured in the same run:
 *
 * 1. Upload → thumbnail: images go through Plinth (`POST /api/v1/files`, multipart, streamed,
 *    hashed, type-checked, fully decoded to refuse bombs and truncation, stored; then
 *    `GET ?variant=thumb`, made by sharp and cached) beside raw `sharp` making the same 256 px WebP
 *    thumbnails from the same bytes in memory. Figure: images per second, ratio Plinth / raw.
 * 2. Download: a 256 KiB public file through Plinth (`GET /api/v1/files/{id}`: lookup, access
 *    check, headers, stream from disk) beside plain Fastify + @fastify/static serving the same
 *    bytes, each in its own child process, driven by autocannon on loopback; rounds alternate.
 *
 * Exits 0 whether or not the goals (≥ 0.8 of the baseline) are met; 1 on a failure.
 * Usage: node bench/files/run.ts [--duration <s>] [--rounds <n>]
 */
import { randomUUID } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { cpus, loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
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

/** Images per second: raw sharp thumbnails vs upload + thumbnail through Plinth, alternating rounds. */
async function uploadThumbnail(rounds: number): Promise<{ raw: number; plinth: number }> {
  const inputs = await images()
  const dir = mkdtempSync(join(tmpdir(), 'plinth-bench-thumbs-'))
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
  try {
    await plinth.prepare()
    const rawRates: number[] = []
    const plinthRates: number[] = []
    for (let r = 1; r <= rounds; r++) {
      let started = performance.now()
      for (const input of inputs) {
        await sharp(input)
          .rotate()
          .resize({ width: 256, height: 256, fit: 'inside' })
          .webp({ quality: 80 })
          .toBuffer()
      }
      rawRates.push(inputs.length / ((performance.now() - started) / 1000))

      // A fresh user per round: its uploads are new bytes to it (no de-duplication shortcut).
      const email = `bench-${randomUUID()}@example.com`
      await createUserDirect(plinth.context, { email, password: PASSWORD, role: 'member' })
      const login = await plinth.app.inject({
        method: 'POST',
        url: '/api/v1/auth/login',
        payload: { email, password: PASSWORD },
      })
      const auth = { authorization: `Bearer ${login.json().token}` }
      started = performance.now()
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
        if (thumb.statusCode !== 200) throw new Error(`thumbnail answered ${thumb.statusCode}: ${thumb.body}`)
      }
      plinthRates.push(inputs.length / ((performance.now() - started) / 1000))
      console.log(
        `round ${r}/${rounds} thumbnails  raw sharp ${num(round(rawRates.at(-1)!, 2))} img/s  plinth ${num(round(plinthRates.at(-1)!, 2))} img/s`,
      )
    }
    const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)]!
    return { raw: median(rawRates), plinth: median(plinthRates) }
  } finally {
    await plinth.shutdown()
    rmSync(dir, { recursive: true, force: true })
  }
}

async function downloads(duration: number, rounds: number): Promise<Record<'static' | 'plinth', Sample>> {
  const samples: Record<'static' | 'plinth', Sample[]> = { static: [], plinth: [] }
  for (let r = 1; r <= rounds; r++) {
    for (const kind of ['static', 'plinth'] as const) {
      const server = await startServer<{ port: number; path: string }>(
        SERVER_FILE,
        [kind],
        `the ${kind} server`,
      )
      try {
        const url = `http://${HOST}:${server.ready.port}${server.ready.path}`
        await load({ url }, CONNECTIONS, WARMUP_SECONDS)
        const sample = await load({ url }, CONNECTIONS, duration)
        if (isInterrupted()) throw new Error('interrupted')
        if (sample.errors + sample.non2xx > 0)
          throw new Error(`${kind}: ${sample.errors} errors, ${sample.non2xx} non-2xx`)
        samples[kind].push(sample)
        console.log(roundLine(r, rounds, kind, sample))
      } finally {
        await server.stop()
      }
    }
  }
  return { static: aggregate(samples.static), plinth: aggregate(samples.plinth) }
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

  console.log(`\nupload → thumbnail   images/s (median of ${rounds})`)
  console.log(`  raw sharp           ${num(round(thumbs.raw, 2))}`)
  console.log(`  plinth              ${num(round(thumbs.plinth, 2))}`)
  const thumbRatio = thumbs.plinth / thumbs.raw
  console.log(`  ratio ${thumbRatio.toFixed(2)} (goal ≥ ${GOAL}: ${thumbRatio >= GOAL ? 'met' : 'NOT met'})`)

  console.log(header('download', rounds))
  console.log(sampleRow('static', dl.static))
  console.log(sampleRow('plinth', dl.plinth))
  const dlRatio = dl.plinth.rps / dl.static.rps
  console.log(
    `ratio ${dlRatio.toFixed(2)} of @fastify/static requests/s (goal ≥ ${GOAL}: ${dlRatio >= GOAL ? 'met' : 'NOT met'})`,
  )
  console.log(
    `load average after: ${round(loadavg()[0]!, 2)} (a shared machine makes absolute figures noisy; the ratios share the noise)`,
  )
  return 0
}

await runBenchmark(main, USAGE)
