/**
 * Cold start: how long `plinth start` (as `npm start` runs it) takes until `/ready` answers 200,
 * on an empty data directory (a new embedded cluster) and on the same directory again (a restart), beside baselines measured
 * in the same run: a bare `node -e ''` (process start), a bare in-memory PGlite with initdb
 * (`PGlite.create()`, what a new cluster cost before the template), importing the application's
 * modules with and without Node's compile cache and through the vendor bundle (decision 0047), and both starts with the compile cache disabled
 * (`NODE_DISABLE_COMPILE_CACHE=1`, as every start ran before src/main.ts enabled it).
 *
 *   node bench/cold-start/run.ts [--rounds N]
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { isInterrupted, runBenchmark, track } from '../lib/children.ts'
import { median } from '../lib/load.ts'
import { parseOptions, UsageError } from '../lib/options.ts'
import { num, row } from '../lib/table.ts'

const usage = `Usage: node bench/cold-start/run.ts [--rounds N] [--compare DIR]

Starts \`plinth start\` on an empty data directory, then again on the same one, N times each
(default 3), timing each until /ready answers 200; prints min/median/max beside a bare Node start
and a bare PGlite initdb measured in the same run. Targets: empty < 2000 ms, existing < 1000 ms.
--compare DIR also starts the checkout in DIR (another worktree of this repository, e.g. the
commit before a change) the same way in every round, the two taking turns at going first: a
before/after in one run.`

const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const DEADLINE_MS = 120_000

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number }
      server.close(() => resolve(port))
    })
  })
}

function exited(child: ChildProcess): Promise<number | null> {
  return new Promise((resolve) => {
    if (child.exitCode !== null) resolve(child.exitCode)
    else child.once('exit', (code) => resolve(code))
  })
}

/** Wall time of a process that runs to completion. */
async function timeProcess(args: readonly string[], env: Record<string, string> = {}): Promise<number> {
  const started = performance.now()
  const child = spawn(process.execPath, [...args], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'ignore', 'inherit'],
  })
  track(child)
  const code = await exited(child)
  if (code !== 0) throw new Error(`${args.join(' ')} exited with ${code}`)
  return performance.now() - started
}

/**
 * The script `npm start` runs in a checkout (`node <script> start` in its package.json), so that a
 * checkout is measured as its users start it; `src/main.ts` where the script says otherwise.
 */
function startEntry(root: string): string {
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { scripts?: { start?: string } }
  const script = /^node (\S+) start$/.exec(pkg.scripts?.start ?? '')?.[1]
  return join(root, script ?? join('src', 'main.ts'))
}

/** Wall time from spawning `plinth start` until /ready answers 200; then stops it (SIGTERM). */
async function timeStart(dataDir: string, env: Record<string, string> = {}, root = ROOT): Promise<number> {
  const port = await freePort()
  const started = performance.now()
  const child = spawn(process.execPath, [startEntry(root), 'start'], {
    cwd: root,
    env: {
      ...process.env,
      PLINTH_DATA_DIR: dataDir,
      PORT: String(port),
      HOST: '127.0.0.1',
      PLINTH_LOG_LEVEL: 'warn',
      ...env,
    },
    stdio: ['ignore', 'ignore', 'inherit'],
  })
  const handle = track(child)
  let readyMs: number | undefined
  try {
    while (readyMs === undefined) {
      if (isInterrupted()) throw new Error('interrupted')
      if (child.exitCode !== null) throw new Error(`plinth start exited with ${child.exitCode}`)
      if (performance.now() - started > DEADLINE_MS) throw new Error('plinth start was not ready in time')
      const ok = await fetch(`http://127.0.0.1:${port}/ready`).then(
        (r) => r.status === 200,
        () => false,
      )
      if (ok) readyMs = performance.now() - started
      else await new Promise((r) => setTimeout(r, 10))
    }
  } catch (err) {
    await handle.stop()
    throw err
  }
  if (!(await handle.stop())) throw new Error('plinth start did not stop cleanly')
  return readyMs
}

/** `--compare DIR` (the shared options parser knows only --duration/--rounds/--help). */
function compareDir(argv: string[]): string | undefined {
  const at = argv.findIndex((a) => a === '--compare' || a.startsWith('--compare='))
  if (at === -1) return undefined
  const arg = argv[at] as string
  const dir = arg.includes('=') ? arg.slice(arg.indexOf('=') + 1) : argv[at + 1]
  argv.splice(at, arg.includes('=') ? 1 : 2)
  if (!dir || !existsSync(join(dir, 'src', 'main.ts')))
    throw new UsageError(`--compare: no src/main.ts in "${dir}"`)
  return resolve(dir)
}

async function main(): Promise<number> {
  const argv = process.argv.slice(2)
  const compare = compareDir(argv)
  const { rounds } = parseOptions(argv, usage)
  const base: { empty: number[]; existing: number[] } = { empty: [], existing: [] }
  const figures: Record<
    | 'node'
    | 'pglite'
    | 'importNoCache'
    | 'import'
    | 'importBundle'
    | 'emptyNoCache'
    | 'existingNoCache'
    | 'empty'
    | 'existing',
    number[]
  > = {
    node: [],
    pglite: [],
    importNoCache: [],
    import: [],
    importBundle: [],
    emptyNoCache: [],
    existingNoCache: [],
    empty: [],
    existing: [],
  }
  // The baseline without Node's compile cache (src/main.ts enables it): every module compiled and
  // type-stripped again, as every start did before.
  const noCache = { NODE_DISABLE_COMPILE_CACHE: '1' }
  const pgliteInit = [
    '--input-type=module',
    '-e',
    "const { PGlite } = await import('@electric-sql/pglite'); const db = await PGlite.create(); await db.query('select 1'); await db.close()",
  ]
  // The application's modules alone (what `plinth start` imports before it opens anything).
  const importApp = [
    '--input-type=module',
    '-e',
    "(await import('node:module')).enableCompileCache(); await import('./src/app/create-plinth.ts')",
  ]
  // The same through the vendor bundle (decision 0047), as `plinth start` imports it: the same
  // figure as above when `npm install` built none.
  const importBundled = [
    '--input-type=module',
    '-e',
    "(await import('node:module')).enableCompileCache(); await import('./bin/vendor-register.js'); await import('./src/app/create-plinth.ts')",
  ]
  for (let r = 1; r <= rounds; r++) {
    figures.node.push(await timeProcess(['-e', '']))
    figures.importNoCache.push(await timeProcess(importApp, noCache))
    figures.import.push(await timeProcess(importApp))
    figures.importBundle.push(await timeProcess(importBundled))
    figures.pglite.push(await timeProcess(pgliteInit))
    /** An empty start then a restart of `checkout` on a new directory, removed afterwards. */
    const pair = async (env: Record<string, string>, checkout?: string) => {
      const dir = mkdtempSync(join(tmpdir(), 'plinth-cold-'))
      try {
        return [await timeStart(dir, env, checkout), await timeStart(dir, env, checkout)] as const
      } finally {
        rmSync(dir, { recursive: true, force: true })
      }
    }
    const [emptyNoCache, existingNoCache] = await pair(noCache)
    figures.emptyNoCache.push(emptyNoCache)
    figures.existingNoCache.push(existingNoCache)
    // With --compare, the two checkouts take turns at going first: the first empty start of a
    // round follows a removed data directory, which makes creating files slower on some file
    // systems, so a fixed order would favour the same checkout in every round.
    const ours = async () => {
      const [empty, existing] = await pair({})
      figures.empty.push(empty)
      figures.existing.push(existing)
    }
    const theirs = async (checkout: string) => {
      const [empty, existing] = await pair({}, checkout)
      base.empty.push(empty)
      base.existing.push(existing)
    }
    if (compare && r % 2 === 0) await theirs(compare)
    await ours()
    if (compare && r % 2 === 1) await theirs(compare)
    if (compare) {
      console.log(
        `round ${r}/${rounds}  compared (${compare}): empty ${num(Math.round(base.empty.at(-1)!))} ms  existing ${num(Math.round(base.existing.at(-1)!))} ms`,
      )
    }
    console.log(
      `round ${r}/${rounds}  node ${num(Math.round(figures.node.at(-1)!))} ms  ` +
        `import app ${num(Math.round(figures.importNoCache.at(-1)!))} ms (no compile cache) / ${num(Math.round(figures.import.at(-1)!))} ms / ${num(Math.round(figures.importBundle.at(-1)!))} ms (vendor bundle)  pglite initdb ${num(Math.round(figures.pglite.at(-1)!))} ms  ` +
        `no compile cache: empty ${num(Math.round(figures.emptyNoCache.at(-1)!))} ms  existing ${num(Math.round(figures.existingNoCache.at(-1)!))} ms  ` +
        `empty ${num(Math.round(figures.empty.at(-1)!))} ms  existing ${num(Math.round(figures.existing.at(-1)!))} ms`,
    )
  }
  const stats = (v: number[]) => ({
    min: Math.round(Math.min(...v)),
    median: Math.round(median(v)),
    max: Math.round(Math.max(...v)),
  })
  const labels = {
    node: 'node -e',
    pglite: 'PGlite initdb',
    importNoCache: 'import app, no cc',
    import: 'import app',
    importBundle: 'import app, bundle',
    emptyNoCache: 'empty, no cc',
    existingNoCache: 'existing, no cc',
    empty: 'start, empty dir',
    existing: 'start, existing dir',
  }
  console.log(`\n${row(['', 'min ms', 'median ms', 'max ms'])}   (${rounds} runs each)`)
  const summary: Record<string, unknown> = { benchmark: 'cold-start', rounds }
  for (const [key, label] of Object.entries(labels) as [keyof typeof figures, string][]) {
    const s = stats(figures[key])
    summary[key] = s
    console.log(`${label.padEnd(21)}${row(['', num(s.min), num(s.median), num(s.max)]).slice(8)}`)
  }
  if (compare) {
    summary.compare = { dir: compare, empty: stats(base.empty), existing: stats(base.existing) }
    for (const [key, label] of [
      ['empty', 'compared, empty'],
      ['existing', 'compared, existing'],
    ] as const) {
      const s = stats(base[key])
      console.log(`${label.padEnd(21)}${row(['', num(s.min), num(s.median), num(s.max)]).slice(8)}`)
    }
  }
  const empty = stats(figures.empty).median
  const existing = stats(figures.existing).median
  console.log(`\nempty dir median ${num(empty)} ms   target < 2000 ms: ${empty < 2000 ? 'met' : 'MISSED'}`)
  console.log(
    `existing dir median ${num(existing)} ms   target < 1000 ms: ${existing < 1000 ? 'met' : 'MISSED'}`,
  )
  console.log(JSON.stringify(summary))
  return 0
}

await runBenchmark(main, usage)
