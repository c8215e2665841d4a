/**
 * Testing an application's modules (`import { createTestPlinth } from 'plinth/testing'`): a real
 * Plinth — every built-in module plus the ones under test — on a fresh database of its own, with
 * `inject` and signed-in users of any role. No mocks: the same migrations, permission checks,
 * audit log and job engine as in production.
 *
 * @packageDocumentation
 */
import { randomBytes } from 'node:crypto'
import type { InjectOptions, LightMyRequestResponse } from 'fastify'
import pg from 'pg'
import type { Logger } from 'pino'
import { createPlinth, type Plinth } from '../app/create-plinth.ts'
import { builtinModules } from '../app/modules.ts'
import type { PlinthConfig } from '../config/config.schema.ts'
import { loadConfig } from '../config/load-config.ts'
import type { PlinthModule } from '../core/module.ts'
import type { Role } from '../core/permissions.ts'
import { createUserDirect } from '../modules/accounts/bootstrap-admin.ts'

export interface TestPlinthOptions {
  /** The modules under test, loaded after the built-in ones. */
  readonly modules?: readonly PlinthModule[]
  /**
   * Configuration variables, as the environment would give them (`PLINTH_…`); the defaults are a
   * quiet test instance on port 0 with the sign-in rate limit off (tests sign many users in).
   */
  readonly env?: Readonly<Record<string, string | undefined>>
  /**
   * A PostgreSQL server to create the test's database on (dropped by `close()`). Defaults to the
   * `DATABASE_URL` environment variable; without one, an in-memory embedded database (PGlite).
   */
  readonly databaseUrl?: string | undefined
  /** `ctx.now`: a clock the test moves instead of sleeping (default `Date.now`). */
  readonly now?: () => number
  readonly logger?: Logger
}

/** A signed-in user: requests made with `headers` (or `inject`) act as them. */
export interface TestUser {
  readonly id: string
  readonly email: string
  readonly role: Role
  readonly password: string
  /** The session's bearer token. */
  readonly token: string
  /** `{ authorization: 'Bearer …' }` */
  readonly headers: Readonly<Record<string, string>>
  /** `plinth.inject` as this user. */
  inject(options: InjectOptions | string): Promise<LightMyRequestResponse>
}

export interface TestPlinth {
  readonly plinth: Plinth
  readonly config: PlinthConfig
  /** The module context (what module code gets; `ctx.db.kysely` sees every table). */
  readonly context: Plinth['context']
  /** Which database it runs on: `embedded` (PGlite) or `postgres` (a fresh database). */
  readonly database: 'embedded' | 'postgres'
  /** An HTTP request without a network (Fastify's `inject`); `url` is absolute: `/api/v1/<module>/…`. */
  inject(options: InjectOptions | string): Promise<LightMyRequestResponse>
  /**
   * Creates a user with this role (default `member`) and signs them in. What they may do follows
   * from the role: built-in permissions and those modules declare for it.
   */
  createUser(options?: { role?: Role; email?: string }): Promise<TestUser>
  /** Shuts down and drops the test database; safe to call twice. */
  close(): Promise<void>
}

/** A password the policy accepts, given to every test user. */
export const TEST_PASSWORD = 'test-plinth-walnut-harbour-93'

let counter = 0

async function withAdmin<T>(url: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  try {
    return await fn(client)
  } finally {
    await client.end()
  }
}

/** A fresh database on the server of `serverUrl`, and how to drop it. */
async function freshDatabase(serverUrl: string): Promise<{ url: string; drop(): Promise<void> }> {
  const name = `plinth_test_${process.pid}_${randomBytes(4).toString('hex')}`
  await withAdmin(serverUrl, (c) => c.query(`create database ${name}`))
  const url = new URL(serverUrl)
  url.pathname = `/${name}`
  return {
    url: url.toString(),
    drop: () =>
      withAdmin(serverUrl, (c) => c.query(`drop database if exists ${name} with (force)`)).then(
        () => undefined,
      ),
  }
}

/**
 * A prepared (connected, migrated, started) Plinth for a test, on a database of its own.
 *
 * @example
 * import { after, test } from 'node:test'
 * import { createTestPlinth } from 'plinth/testing'
 * const t = await createTestPlinth({ modules: [notes] })
 * after(() => t.close())
 * test('a member writes a note', async () => {
 *   const alice = await t.createUser({ role: 'member' })
 *   const res = await alice.inject({ method: 'POST', url: '/api/v1/notes', payload: { body: 'hi' } })
 *   assert.equal(res.statusCode, 201)
 * })
 */
export async function createTestPlinth(options: TestPlinthOptions = {}): Promise<TestPlinth> {
  const serverUrl = options.databaseUrl ?? process.env.DATABASE_URL
  const fresh = serverUrl ? await freshDatabase(serverUrl) : undefined
  let plinth: Plinth | undefined
  try {
    const config = loadConfig({
      env: {
        PLINTH_ENV: 'test',
        PLINTH_DATA_DIR: 'memory://',
        PORT: '0',
        PLINTH_LOG_LEVEL: 'silent',
        PLINTH_BACKUP_CRON: 'off',
        PLINTH_MAX_EVENT_LOOP_DELAY: '0',
        PLINTH_RATE_LIMIT_AUTH: '0',
        ...options.env,
        DATABASE_URL: fresh?.url,
      },
      envFile: false,
    })
    plinth = await createPlinth({
      config,
      modules: [...builtinModules, ...(options.modules ?? [])],
      ...(options.logger ? { logger: options.logger } : {}),
      ...(options.now ? { now: options.now } : {}),
    })
    await plinth.prepare()
  } catch (err) {
    await plinth?.shutdown().catch(() => {})
    await fresh?.drop().catch(() => {})
    throw err
  }
  const running = plinth
  const inject = (opts: InjectOptions | string) => running.app.inject(opts)
  let closed: Promise<void> | undefined
  return {
    plinth: running,
    config: running.config,
    context: running.context,
    database: fresh ? 'postgres' : 'embedded',
    inject,
    async createUser({ role = 'member', email } = {}) {
      counter++
      const address = email ?? `${role}-${counter}-${randomBytes(3).toString('hex')}@example.test`
      const id = await createUserDirect(running.context, { email: address, password: TEST_PASSWORD, role })
      const res = await inject({
        method: 'POST',
        url: '/api/v1/auth/login',
        payload: { email: address, password: TEST_PASSWORD },
      })
      if (res.statusCode !== 200)
        throw new Error(`signing ${address} in failed: ${res.statusCode} ${res.body}`)
      const token = (res.json() as { token: string }).token
      const headers = Object.freeze({ authorization: `Bearer ${token}` })
      return {
        id,
        email: address,
        role,
        password: TEST_PASSWORD,
        token,
        headers,
        inject(opts) {
          const o: InjectOptions = typeof opts === 'string' ? { url: opts } : opts
          return inject({ ...o, headers: { ...(o.headers ?? {}), ...headers } })
        },
      }
    },
    close() {
      closed ??= (async () => {
        try {
          await running.shutdown()
        } finally {
          await fresh?.drop()
        }
      })()
      return closed
    },
  }
}
