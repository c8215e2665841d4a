/**
 * The Plinth side of a benchmark server child (see server-child.ts): Plinth started as production
 * runs it, and a user signed in over HTTP whose bearer token the child reports to its parent.
 */
import { randomBytes } from 'node:crypto'
import { createPlinth, type Plinth } from '../../src/app/create-plinth.ts'
import { type EnvSource, loadConfig } from '../../src/config/load-config.ts'
import type { PlinthModule } from '../../src/core/module.ts'
import type { Role } from '../../src/core/permissions.ts'
import { createUserDirect } from '../../src/modules/accounts/bootstrap-admin.ts'
import { createLogger, logDestination } from '../../src/observability/logger.ts'
import { portOf, productionEnv, type Running } from './server-child.ts'

/** Every benchmark server listens here, on an ephemeral port. */
export const HOST = '127.0.0.1'

export interface RunningPlinth extends Running {
  readonly plinth: Plinth
}

/**
 * Plinth as production runs it: `productionEnv` plus `env` (the database, keys, limits), JSON logs at
 * `info` written to a real (if discarded) file through the same buffered asynchronous destination
 * createLogger uses for stdout in production, the whole plugin stack, listening on HOST.
 * `modules` defaults to createPlinth's (the built-in ones).
 */
export async function startProductionPlinth(
  env: EnvSource,
  modules?: readonly PlinthModule[],
): Promise<RunningPlinth> {
  const config = loadConfig({ env: { ...productionEnv(HOST), ...env }, envFile: false })
  const logger = createLogger(config, logDestination('/dev/null'))
  const plinth = await createPlinth({ config, logger, ...(modules ? { modules } : {}) })
  await plinth.listen()
  return { plinth, port: portOf(plinth.app.server.address()), close: () => plinth.shutdown() }
}

export interface SignedIn {
  readonly email: string
  readonly password: string
  /** The bearer token of the sign-in. */
  readonly token: string
}

/**
 * A fresh user with `role`, created directly (a random email and password), then signed in over
 * HTTP at `POST /api/v1/auth/login` as a client would.
 */
export async function signInNewUser(running: RunningPlinth, role: Role): Promise<SignedIn> {
  const email = `bench-${randomBytes(6).toString('hex')}@example.com`
  const password = `bench-${randomBytes(12).toString('base64url')}`
  await createUserDirect(running.plinth.context, { email, password, role })
  const res = await fetch(`http://${HOST}:${running.port}/api/v1/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email, password }),
    signal: AbortSignal.timeout(5000),
  })
  const body = (await res.json()) as { token?: string }
  if (res.status !== 200 || !body.token)
    throw new Error(`sign-in answered ${res.status}: ${JSON.stringify(body)}`)
  return { email, password, token: body.token }
}
