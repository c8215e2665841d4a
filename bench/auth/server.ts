/**
 * The benchmark server, run as a child of `bench/auth/run.ts` (never on its own): Plinth's full
 * stack built by `createPlinth` as production runs it, plus one bench-only route (WHOAMI in
 * protocol.ts), with one user created directly and signed in once, on 127.0.0.1 with an ephemeral
 * port, and LOGIN_CONNECTIONS more for the sign-in runs. Over the IPC channel the child sends
 * `{ type: 'ready', port, email, password, token, logins }` (the bearer token of that sign-in, and
 * the other accounts' credentials) or `{ type: 'failed', message }`; the parent sends `'stop'`
 * for a graceful close. A lost channel (the parent died) or a signal ends the child too.
 */
import { builtinModules } from '../../src/app/modules.ts'
import type { PlinthModule } from '../../src/core/module.ts'
import { signInNewUser, startProductionPlinth } from '../lib/plinth-child.ts'
import { type Running as Listening, requireParent, serveChild, UNTHROTTLED } from '../lib/server-child.ts'
import { LOGIN_CONNECTIONS, type ServerMessage, WHOAMI } from './protocol.ts'

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
  readonly logins: readonly { readonly email: string; readonly password: string }[]
}

/**
 * Plinth as production runs it (like bench/http/server.ts): JSON logs at `info` to a real, discarded
 * file, the whole plugin stack with authentication, the embedded database in memory (or the
 * PostgreSQL server at BENCH_DATABASE_URL). Rate limits
 * are raised so that the benchmark measures the work, not the 429s; the limiter still counts.
 */
async function startPlinth(): Promise<Running> {
  const running = await startProductionPlinth(
    {
      // The embedded database in memory, or a PostgreSQL server (a scratch database: users and
      // sessions pile up in it run after run).
      ...(process.env.BENCH_DATABASE_URL
        ? { DATABASE_URL: process.env.BENCH_DATABASE_URL }
        : { PLINTH_DATA_DIR: 'memory://' }),
      PLINTH_RATE_LIMIT_AUTH: UNTHROTTLED,
    },
    [...builtinModules, benchModule],
  )
  // Signed in over HTTP, as a client would.
  const user = await signInNewUser(running, 'member')
  const logins = []
  for (let i = 0; i < LOGIN_CONNECTIONS; i++) {
    const { email, password } = await signInNewUser(running, 'member')
    logins.push({ email, password })
  }
  return { port: running.port, ...user, logins, close: running.close }
}

requireParent('bench/auth/server.ts runs as a child of bench/auth/run.ts')
type Ready = Omit<Extract<ServerMessage, { type: 'ready' }>, 'type'>
await serveChild(
  startPlinth,
  ({ port, email, password, token, logins }): Ready => ({ port, email, password, token, logins }),
)
