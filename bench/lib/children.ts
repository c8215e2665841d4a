/**
 * The parent side of a benchmark's server children: each server runs in a child process forked on
 * this same Node binary and talks over IPC (it sends `{ type: 'ready', port, … }` or
 * `{ type: 'failed', message }`; the parent sends `'stop'`, then SIGKILL past STOP_TIMEOUT_MS).
 * runBenchmark() wires Ctrl-C and the exit codes: 0 done, 1 broken, 2 bad arguments, 130 interrupted.
 */
import { type ChildProcess, fork } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { stopRateLoad } from './constant-rate.ts'
import { stopLoad } from './load.ts'
import { isUsageError } from './options.ts'

const START_TIMEOUT_MS = 60_000
/** A server gives its graceful close 5 s (server-child.ts); past this it is killed. */
const STOP_TIMEOUT_MS = 8_000

export type ServerMessage<Ready extends { port: number } = { port: number }> =
  | ({ type: 'ready' } & Ready)
  | { type: 'failed'; message: string }

// What a Ctrl-C (or any failure) must clean up.
const children = new Set<ChildProcess>()
let interrupted = false

/** True once SIGINT or SIGTERM arrived: the benchmark should stop (runBenchmark exits 130). */
export function isInterrupted(): boolean {
  return interrupted
}

function stopChild(child: ChildProcess): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode === 0)
  return new Promise((resolve) => {
    const kill = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS)
    child.once('exit', (code) => {
      clearTimeout(kill)
      resolve(code === 0)
    })
    if (child.connected) child.send('stop')
    else child.kill('SIGTERM')
  })
}

/**
 * Stops a server started by startServer, noting in `problems` when it did not stop cleanly (an
 * interrupted run notes nothing: its servers are being stopped on purpose).
 */
export async function stopServer(
  server: { stop: () => Promise<boolean> },
  kind: string,
  problems: string[],
): Promise<void> {
  if (!(await server.stop()) && !isInterrupted()) problems.push(`the ${kind} server did not stop cleanly`)
}

/**
 * Forks `file` with `args` and waits for its ready message; `name` ("the bare server") names it in
 * errors. `stop()` resolves true when the child exited 0.
 */
export async function startServer<Ready extends { port: number } = { port: number }>(
  file: string,
  args: readonly string[],
  name: string,
): Promise<{ ready: Ready & { type: 'ready' }; stop: () => Promise<boolean>; pid: number | undefined }> {
  if (interrupted) throw new Error('interrupted')
  const child = fork(file, [...args], {
    execPath: process.execPath,
    execArgv: [],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  children.add(child)
  child.once('exit', () => children.delete(child))
  try {
    const ready = await new Promise<Ready & { type: 'ready' }>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`${name} did not start within ${START_TIMEOUT_MS / 1000} s`)),
        START_TIMEOUT_MS,
      )
      child.once('message', (m: ServerMessage<Ready>) => {
        clearTimeout(timer)
        if (m.type === 'ready') resolve(m)
        else reject(new Error(`${name} failed to start:\n${m.message}`))
      })
      child.once('error', (err) => {
        clearTimeout(timer)
        reject(err)
      })
      child.once('exit', (code, signal) => {
        clearTimeout(timer)
        reject(new Error(`${name} exited (${signal ?? code}) before it was ready`))
      })
    })
    return { ready, stop: () => stopChild(child), pid: child.pid }
  } catch (err) {
    await stopChild(child)
    throw err
  }
}

/**
 * Puts a child forked by a benchmark itself (not through startServer) under the same clean-up: on
 * Ctrl-C or a failure it is sent `'stop'`, then killed past STOP_TIMEOUT_MS. `stop()` does the same
 * on demand and resolves true when the child exited 0.
 */
export function track(child: ChildProcess): { stop: () => Promise<boolean> } {
  children.add(child)
  child.once('exit', () => children.delete(child))
  return { stop: () => stopChild(child) }
}

/** Stops the load and every server; bounded by STOP_TIMEOUT_MS. */
async function cleanUp(): Promise<void> {
  stopLoad()
  stopRateLoad()
  await Promise.all([...children].map(stopChild))
}

/**
 * Runs a benchmark's `main` (which returns its exit code) with Ctrl-C handling, prints `usage`
 * after a usage error (exit 2), and always leaves no server behind.
 */
export async function runBenchmark(main: () => Promise<number>, usage: string): Promise<void> {
  const onSignal = () => {
    // Later signals (a second Ctrl-C, the one the terminal also sends to the group) change nothing:
    // the clean-up is already bounded.
    if (interrupted) return
    interrupted = true
    console.error('\ninterrupted: stopping the servers')
    void cleanUp().finally(() => process.exit(130))
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)

  try {
    process.exitCode = await main()
  } catch (err) {
    if (isUsageError(err)) {
      console.error(`${(err as Error).message}\n\n${usage}`)
      process.exitCode = 2
    } else if (!interrupted) {
      console.error(err instanceof Error ? (err.stack ?? err.message) : err)
      process.exitCode = 1
    }
  } finally {
    if (!interrupted) await cleanUp()
  }
}

/**
 * CPU time a process has used so far, in milliseconds (user + system, every thread: Linux
 * `/proc/<pid>/stat`), or undefined where that cannot be read. The difference over a run divided by
 * the responses served is a server's cost per request, which a loaded machine stretches far less
 * than it stretches latencies.
 */
export function processCpuMs(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // Fields after the command name (which may hold spaces) start after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    const ticks = Number(fields[11]) + Number(fields[12])
    return Number.isFinite(ticks) ? (ticks * 1000) / CLOCK_TICKS : undefined
  } catch {
    return undefined
  }
}
/** USER_HZ: 100 on every Linux this runs on. */
const CLOCK_TICKS = 100
