import { Redis } from 'ioredis'
import pg from 'pg'

/** Set by .ci/run: a missing PostgreSQL or Redis fails the run instead of skipping suites. */
export const REQUIRE_SERVICES = process.env.PLINTH_TEST_REQUIRE_SERVICES === '1'
export const TEST_DATABASE_URL =
  process.env.PLINTH_TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres'
export const TEST_REDIS_URL = process.env.PLINTH_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379'

const HINT =
  'start it (see README "Development"), point PLINTH_TEST_DATABASE_URL / PLINTH_TEST_REDIS_URL at one, ' +
  'or run .ci/run, which starts both; PLINTH_TEST_REQUIRE_SERVICES=1 makes this a failure instead of a skip.'

/** Errors that mean nothing listens there: no point in asking again. */
const ABSENT = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH'])
const ATTEMPTS = 5
const RETRY_MS = 1000

/**
 * Undefined when `check` succeeds, else why not. A server that is there but busy (too many clients
 * while other test files hold their pools, a connection slower than its timeout on a loaded
 * machine) is asked again, ATTEMPTS times a second apart: one busy moment must not skip a suite, or
 * fail the run when services are required.
 */
async function unreachable(check: () => Promise<void>): Promise<string | undefined> {
  for (let attempt = 1; ; attempt++) {
    try {
      await check()
      return undefined
    } catch (err) {
      // ioredis's refusal carries its code in the message only.
      const code =
        (err as { code?: string }).code ?? /\b(E[A-Z]+)\b/.exec(String((err as Error).message))?.[1]
      const reason = `${(err as Error).message || String(err)}${code ? ` (${code})` : ''}`
      if ((code && ABSENT.has(code)) || attempt >= ATTEMPTS)
        return attempt > 1 ? `${reason}, after ${attempt} attempts` : reason
      await new Promise((resolve) => setTimeout(resolve, RETRY_MS))
    }
  }
}

let pgState: Promise<string | undefined> | undefined
let redisState: Promise<string | undefined> | undefined

/**
 * `false` when PostgreSQL answers, otherwise a skip message. With PLINTH_TEST_REQUIRE_SERVICES=1
 * an unreachable server throws, so the suite fails.
 *
 * @example
 * describe('on PostgreSQL', { skip: await skipUnlessPostgres() }, () => { ... })
 */
export async function skipUnlessPostgres(): Promise<false | string> {
  pgState ??= unreachable(async () => {
    const client = new pg.Client({ connectionString: TEST_DATABASE_URL, connectionTimeoutMillis: 3000 })
    await client.connect()
    await client.end()
  })
  const why = await pgState
  if (why === undefined) return false
  const message = `PostgreSQL not reachable at ${TEST_DATABASE_URL} (${why}): ${HINT}`
  if (REQUIRE_SERVICES) throw new Error(message)
  return message
}

/** Like skipUnlessPostgres, for Redis. */
export async function skipUnlessRedis(): Promise<false | string> {
  redisState ??= unreachable(async () => {
    const client = new Redis(TEST_REDIS_URL, {
      lazyConnect: true,
      connectTimeout: 3000,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
    })
    // The refusal is the connect's rejection; without a listener ioredis also prints it.
    client.on('error', () => {})
    try {
      await client.connect()
      await client.ping()
    } finally {
      client.disconnect()
    }
  })
  const why = await redisState
  if (why === undefined) return false
  const message = `Redis not reachable at ${TEST_REDIS_URL} (${why}): ${HINT}`
  if (REQUIRE_SERVICES) throw new Error(message)
  return message
}
