/**
 * The benchmark server, run as a child of `bench/auth/run.ts` (never on its own): Plinth's full
 * stack built by `createPlinth` as production runs it, plus one bench-only route (WHOAMI in
 * protocol.ts), with one user created directly and signed in once, on 127.0.0.1 with an ephemeral
 * port. Over the IPC channel the child sends `{ type: 'ready', port, email, password, token }`
 * (the bearer token of that sign-in) or `{ type: 'failed', message }`; the parent sends `'stop'`
 * for a graceful close. A lost channel (the parent died) or a signal ends the child too.
 */
import { randomBytes } from 'node:crypto'
import { createPlinth } from '../../src/app/create-plinth.ts'
import { builtinModules } from '../../src/app/modules.ts'
import { loadConfig } from '../../src/config/load-config.ts'
import type { PlinthModule } from '../../src/core/module.ts'
import { createUserDirect } from '../../src/modules/accounts/bootstrap-admin.ts'
import { createLogger, logDestination } from '../../src/observability/logger.ts'
import {
  type Running as Listening,
  portOf,
  productionEnv,
  requireParent,
  serveChild,
  UNTHROTTLED,
} from '../lib/server-child.ts'
import { type ServerMessage, WHOAMI } from './protocol.ts'

const HOST = '127.0.0.1'

/** See WHOAMI in protocol.ts. */
const benchModule: PlinthModule = {
  name: 'bench-auth',
  routes(api) {
    api.get(WHOAMI, { config: { permission: 'self:read' } }, async (request) => ({
      userId: request.principal?.userId ?? null,
    }))
  },
}

interface Running extends Listening {
  readonly email: string
  readonly password: string
  readonly token: string
}

/**
 * Plinth as production runs it (like bench/http/server.ts): JSON logs at `info` to a real, discarded
 * file, the whole plugin stack with authentication, the embedded database in memory (or the
 * PostgreSQL server at BENCH_DATABASE_URL). Rate limits
 * are raised so that the benchmark measures the work, not the 429s; the limiter still counts.
 */
async function startPlinth(): Promise<Running> {
  const config = loadConfig({
    env: {
      ...productionEnv(HOST),
      // The embedded database in memory, or a PostgreSQL server (a scratch database: users and
      // sessions pile up in it run after run).
      ...(process.env.BENCH_DATABASE_URL
        ? { DATABASE_URL: process.env.BENCH_DATABASE_URL }
        : { PLINTH_DATA_DIR: 'memory://' }),
      PLINTH_RATE_LIMIT_AUTH: UNTHROTTLED,
    },
    envFile: false,
  })
  const logger = createLogger(config, logDestination('/dev/null'))
  const plinth = await createPlinth({ config, logger, modules: [...builtinModules, benchModule] })
  await plinth.listen()
  const port = portOf(plinth.app.server.address())
  const email = `bench-${randomBytes(6).toString('hex')}@example.com`
  const password = `bench-${randomBytes(12).toString('base64url')}`
  await createUserDirect(plinth.context, { email, password, role: 'member' })
  // Signed in over HTTP, as a client would.
  const res = await fetch(`http://${HOST}:${port}/api/v1/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email, password }),
    signal: AbortSignal.timeout(5000),
  })
  const body = (await res.json()) as { token?: string }
  if (res.status !== 200 || !body.token)
    throw new Error(`sign-in answered ${res.status}: ${JSON.stringify(body)}`)
  return { port, email, password, token: body.token, close: () => plinth.shutdown() }
}

requireParent('bench/auth/server.ts runs as a child of bench/auth/run.ts')
type Ready = Omit<Extract<ServerMessage, { type: 'ready' }>, 'type'>
await serveChild(startPlinth, ({ port, email, password, token }): Ready => ({ port, email, password, token }))
