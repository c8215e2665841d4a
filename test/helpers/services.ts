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

async function reachable(check: () => Promise<void>): Promise<boolean> {
  try {
    await check()
    return true
  } catch {
    return false
  }
}

let pgState: Promise<boolean> | undefined
let redisState: Promise<boolean> | undefined

/**
 * `false` when PostgreSQL answers, otherwise a skip message. With PLINTH_TEST_REQUIRE_SERVICES=1
 * an unreachable server throws, so the suite fails.
 *
 * @example
 * describe('on PostgreSQL', { skip: await skipUnlessPostgres() }, () => { ... })
 */
export async function skipUnlessPostgres(): Promise<false | string> {
  pgState ??= reachable(async () => {
    const client = new pg.Client({ connectionString: TEST_DATABASE_URL, connectionTimeoutMillis: 3000 })
    await client.connect()
    await client.end()
  })
  if (await pgState) return false
  const message = `PostgreSQL not reachable at ${TEST_DATABASE_URL}: ${HINT}`
  if (REQUIRE_SERVICES) throw new Error(message)
  return message
}

/** Like skipUnlessPostgres, for Redis. */
export async function skipUnlessRedis(): Promise<false | string> {
  redisState ??= reachable(async () => {
    const client = new Redis(TEST_REDIS_URL, {
      lazyConnect: true,
      connectTimeout: 3000,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
    })
    try {
      await client.connect()
      await client.ping()
    } finally {
      client.disconnect()
    }
  })
  if (await redisState) return false
  const message = `Redis not reachable at ${TEST_REDIS_URL}: ${HINT}`
  if (REQUIRE_SERVICES) throw new Error(message)
  return message
}
