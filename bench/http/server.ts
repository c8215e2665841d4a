/**
 * One benchmark server, run as a child of `bench/http/run.ts` (never on its own): `bare` is Fastify
 * with no logger and no plugins, `plinth` is Plinth's full HTTP stack built by `createPlinth`.
 * Both serve `GET /api/v1` on 127.0.0.1 with an ephemeral port. Protocol over the IPC channel:
 * the child sends `{ type: 'ready', port }` or `{ type: 'failed', message }`; the parent sends
 * `'stop'` for a graceful close. A lost channel (the parent died) or a signal ends the child too.
 */
import { randomBytes } from 'node:crypto'
import type { AddressInfo } from 'node:net'
import Fastify from 'fastify'
import { Type } from 'typebox'
import { loadConfig } from '../../src/config/load-config.ts'
import { createPlinth } from '../../src/core/create-plinth.ts'
import { PLINTH_VERSION } from '../../src/core/version.ts'
import { createLogger, logDestination } from '../../src/observability/logger.ts'

export type ServerKind = 'bare' | 'plinth'

export type ServerMessage = { type: 'ready'; port: number } | { type: 'failed'; message: string }

const HOST = '127.0.0.1'
/** A graceful close that takes longer than this is cut: the parent waits only so long anyway. */
const CLOSE_LIMIT_MS = 5000

interface Running {
  readonly port: number
  close(): Promise<void>
}

/** The same route as src/modules/system/system.module.ts: path, response schema and handler body. */
async function startBare(): Promise<Running> {
  const ApiInfo = Type.Object({
    name: Type.Literal('plinth'),
    version: Type.String(),
    api: Type.Literal('v1'),
  })
  const app = Fastify({ logger: false })
  app.get('/api/v1', { schema: { response: { 200: ApiInfo } } }, async () => ({
    name: 'plinth' as const,
    version: PLINTH_VERSION,
    api: 'v1' as const,
  }))
  await app.listen({ port: 0, host: HOST })
  return { port: portOf(app.server.address()), close: () => app.close() }
}

/**
 * Plinth as production runs it: JSON logs at `info` written to a real (if discarded) file, the
 * whole plugin stack, the embedded database in memory. Only the shutdown delay differs (it is
 * spent after the measurement, never on the hot path).
 */
async function startPlinth(): Promise<Running> {
  const config = loadConfig({
    env: {
      PLINTH_ENV: 'production',
      PLINTH_SECRET_KEY: randomBytes(48).toString('base64'),
      PLINTH_MASTER_KEY: randomBytes(32).toString('base64'),
      PLINTH_DATA_DIR: 'memory://',
      HOST,
      PORT: '0',
      PLINTH_LOG_LEVEL: 'info',
      PLINTH_LOG_FORMAT: 'json',
      PLINTH_SHUTDOWN_DELAY: '0',
      // The limiter runs (its cost is measured), but autocannon is one client: it must not be refused.
      PLINTH_RATE_LIMIT_API: '1000000',
    },
    envFile: false,
  })
  // The same buffered asynchronous destination createLogger uses for stdout in production.
  const logger = createLogger(config, logDestination('/dev/null'))
  const plinth = await createPlinth({ config, logger })
  await plinth.listen()
  return { port: portOf(plinth.app.server.address()), close: () => plinth.shutdown() }
}

function portOf(address: AddressInfo | string | null): number {
  if (address === null || typeof address === 'string') throw new Error(`unexpected address ${address}`)
  return address.port
}

function send(message: ServerMessage): void {
  process.send?.(message)
}

async function main(): Promise<void> {
  const kind = process.argv[2]
  if (!process.send) throw new Error('bench/http/server.ts runs as a child of bench/http/run.ts')
  if (kind !== 'bare' && kind !== 'plinth') throw new Error(`unknown server kind "${kind}"`)

  let running: Running | undefined
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
    running = kind === 'bare' ? await startBare() : await startPlinth()
  } catch (err) {
    send({ type: 'failed', message: err instanceof Error ? (err.stack ?? err.message) : String(err) })
    process.exit(1)
  }
  send({ type: 'ready', port: running.port })
}

await main()
