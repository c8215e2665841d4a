import { spawn } from 'node:child_process'
import { REQUIRE_SERVICES } from './services.ts'

/** The promtool binary (Debian: `apt-get install prometheus`); PLINTH_TEST_PROMTOOL overrides it. */
const PROMTOOL = process.env.PLINTH_TEST_PROMTOOL ?? 'promtool'

export interface PromtoolResult {
  /** Exit code; null when it was killed (timeout). */
  readonly code: number | null
  /** stdout and stderr together: the lint problems, one a line. */
  readonly output: string
}

function run(args: readonly string[], input: string, timeoutMs = 15_000): Promise<PromtoolResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(PROMTOOL, args, { stdio: ['pipe', 'pipe', 'pipe'], timeout: timeoutMs })
    let output = ''
    child.stdout.on('data', (d) => {
      output += d
    })
    child.stderr.on('data', (d) => {
      output += d
    })
    child.on('error', reject)
    child.on('close', (code) => resolve({ code, output }))
    // promtool may exit before reading everything; the close event still reports why.
    child.stdin.on('error', () => {})
    child.stdin.end(input)
  })
}

let found: Promise<boolean> | undefined

/**
 * `false` when promtool runs, otherwise a skip message; with PLINTH_TEST_REQUIRE_SERVICES=1 a
 * missing promtool throws, so the suite fails (as services.ts does for PostgreSQL and Redis).
 */
export async function skipUnlessPromtool(): Promise<false | string> {
  found ??= run(['--version'], '').then(
    (r) => r.code === 0,
    () => false,
  )
  if (await found) return false
  const message = `promtool not found (${PROMTOOL}): install it (Debian/Ubuntu: apt-get install prometheus) or point PLINTH_TEST_PROMTOOL at it; PLINTH_TEST_REQUIRE_SERVICES=1 makes this a failure instead of a skip.`
  if (REQUIRE_SERVICES) throw new Error(message)
  return message
}

/** Lints a Prometheus text exposition with `promtool check metrics` (body on stdin). */
export function checkMetrics(exposition: string): Promise<PromtoolResult> {
  return run(['check', 'metrics'], exposition)
}
