import { spawn } from 'node:child_process'
import { teeChildLogs } from './run-logs.ts'

export interface CliRun {
  readonly code: number | null
  readonly out: string
  readonly err: string
}

/**
 * What a child passes on besides its own `env`: PATH, and under `npm test`'s coverage the
 * directory V8 writes it to (NODE_V8_COVERAGE), so the code a command runs counts in the report
 * like the code a test runs in its own process.
 */
export function childBaseEnv(): Record<string, string> {
  const coverage = process.env.NODE_V8_COVERAGE
  return { PATH: process.env.PATH ?? '', ...(coverage ? { NODE_V8_COVERAGE: coverage } : {}) }
}

/**
 * Runs the real `plinth` entry in a child process with exactly `env` (plus PATH and the coverage
 * directory, see childBaseEnv), optionally feeding `stdin`; killed after 60 s so a hung command
 * fails its test instead of the run.
 */
export function spawnCli(
  args: readonly string[],
  env: Record<string, string>,
  options: { stdin?: string; entry?: string; node?: string } = {},
): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(options.node ?? process.execPath, [options.entry ?? 'src/main.ts', ...args], {
      env: { ...childBaseEnv(), ...env },
    })
    teeChildLogs(child, env)
    let out = ''
    let err = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (err += d))
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000)
    child.on('error', reject)
    child.on('exit', (code) => {
      clearTimeout(timer)
      resolve({ code, out, err })
    })
    child.stdin.end(options.stdin ?? '')
  })
}
