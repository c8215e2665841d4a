/**
 * Runs every benchmark (`bench/<name>/run.ts`) in turn, each as a child process on this same Node
 * binary, passing along this script's arguments (`npm run bench -- --duration 5`) and environment.
 * Exits 1 when any benchmark exits non-zero, 130 when interrupted (the running benchmark is asked
 * to stop and cleans up its own servers; no further benchmark starts).
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { existsSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

const BENCH_DIR = fileURLToPath(new URL('.', import.meta.url))

const benchmarks = readdirSync(BENCH_DIR, { withFileTypes: true })
  .filter((entry) => entry.isDirectory() && existsSync(join(BENCH_DIR, entry.name, 'run.ts')))
  .map((entry) => entry.name)
  .sort()

let current: ChildProcess | undefined
let interrupted = false
const onSignal = (signal: NodeJS.Signals) => {
  interrupted = true
  // A benchmark treats repeated signals as one, so forwarding is safe even when the terminal has
  // already sent the same Ctrl-C to the whole process group.
  current?.kill(signal)
}
process.on('SIGINT', onSignal)
process.on('SIGTERM', onSignal)

function run(name: string): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [join(BENCH_DIR, name, 'run.ts'), ...process.argv.slice(2)], {
      stdio: 'inherit',
    })
    current = child
    child.once('error', (err) => {
      console.error(`bench/${name}: ${err.message}`)
      resolve(1)
    })
    child.once('exit', (code, signal) => {
      current = undefined
      resolve(code ?? (signal ? 128 : 1))
    })
  })
}

const results: { name: string; code: number; seconds: number }[] = []
if (benchmarks.length === 0) console.error(`no benchmarks found (expected ${BENCH_DIR}<name>/run.ts)`)
for (const name of benchmarks) {
  if (interrupted) break
  console.log(`\n== bench/${name} ==\n`)
  const started = performance.now()
  const code = await run(name)
  results.push({ name, code, seconds: Math.round((performance.now() - started) / 1000) })
}

console.log('\n== summary ==')
for (const { name, code, seconds } of results) {
  console.log(`bench/${name}: ${code === 0 ? 'ok' : `failed (exit ${code})`} in ${seconds} s`)
}
const skipped = benchmarks.slice(results.length)
if (skipped.length > 0) console.log(`not run (interrupted): ${skipped.map((n) => `bench/${n}`).join(', ')}`)
process.exitCode = interrupted ? 130 : results.some((r) => r.code !== 0) || benchmarks.length === 0 ? 1 : 0
