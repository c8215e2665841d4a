/**
 * The child side of a benchmark server (see children.ts): starts the server, reports
 * `{ type: 'ready', … }` or `{ type: 'failed', message }` over IPC, and closes gracefully on
 * `'stop'`, on a lost channel (the parent died) or on a signal, cut after CLOSE_LIMIT_MS.
 */
import { randomBytes } from 'node:crypto'
import type { AddressInfo } from 'node:net'

/** A graceful close that takes longer than this is cut: the parent waits only so long anyway. */
const CLOSE_LIMIT_MS = 5000

export interface Running {
  readonly port: number
  close(): Promise<void>
}

/** Far above what a run sends (the ceiling of the config keys): the limiter still counts every request. */
export const UNTHROTTLED = '1000000'

/**
 * Plinth's environment as production runs it, on an ephemeral port of `host`, with fresh keys and
 * JSON logs at `info`. Only the shutdown delay differs (it is spent after the measurement, never on
 * the hot path). The API rate limit is raised: the limiter runs (its cost is measured), but
 * autocannon is one client and must not be refused. The caller adds the database.
 */
export function productionEnv(host: string): Record<string, string> {
  return {
    PLINTH_ENV: 'production',
    PLINTH_SECRET_KEY: randomBytes(48).toString('base64'),
    PLINTH_MASTER_KEY: randomBytes(32).toString('base64'),
    HOST: host,
    PORT: '0',
    PLINTH_LOG_LEVEL: 'info',
    PLINTH_LOG_FORMAT: 'json',
    PLINTH_SHUTDOWN_DELAY: '0',
    PLINTH_RATE_LIMIT_API: UNTHROTTLED,
  }
}

export function portOf(address: AddressInfo | string | null): number {
  if (address === null || typeof address === 'string') throw new Error(`unexpected address ${address}`)
  return address.port
}

function send(message: { type: 'ready' } | { type: 'failed'; message: string }): void {
  process.send?.(message)
}

/** Throws `message` unless this process was forked with an IPC channel. */
export function requireParent(message: string): void {
  if (!process.send) throw new Error(message)
}

/** Starts the server with `start` and sends `ready(running)` to the parent, then serves until told to stop. */
export async function serveChild<R extends Running>(
  start: () => Promise<R>,
  ready: (running: R) => { port: number },
): Promise<void> {
  let running: R | undefined
  let stopping = false
  const stop = (code: number) => {
    if (stopping) return
    stopping = true
    const cut = setTimeout(() => process.exit(code === 0 ? 1 : code), CLOSE_LIMIT_MS)
    cut.unref()
    // A stop during start finds nothing to close yet; exiting releases the half-open server.
    void (running?.close() ?? Promise.resolve()).then(
      () => process.exit(code),
      () => process.exit(1),
    )
  }
  process.on('message', (message) => {
    if (message === 'stop') stop(0)
  })
  // The parent is gone (crash, Ctrl-C, kill): do not outlive it.
  process.on('disconnect', () => stop(0))
  process.on('SIGINT', () => stop(130))
  process.on('SIGTERM', () => stop(143))

  try {
    running = await start()
  } catch (err) {
    send({ type: 'failed', message: err instanceof Error ? (err.stack ?? err.message) : String(err) })
    process.exit(1)
  }
  send({ type: 'ready', ...ready(running) })
}
