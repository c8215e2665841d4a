import { randomBytes } from 'node:crypto'
import pg from 'pg'
import { TEST_DATABASE_URL } from './services.ts'

export interface TestDatabase {
  /** Connection URL of the new, empty database. */
  readonly url: string
  readonly name: string
  /** Drops the database, closing whatever still uses it. */
  drop(): Promise<void>
}

async function admin<T>(fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: TEST_DATABASE_URL })
  await client.connect()
  try {
    return await fn(client)
  } finally {
    await client.end()
  }
}

/** A fresh database on the test server, for one test file (or one test). */
export async function createTestDatabase(): Promise<TestDatabase> {
  const name = `plinth_test_${process.pid}_${randomBytes(4).toString('hex')}`
  await admin((c) => c.query(`create database ${name}`))
  const url = new URL(TEST_DATABASE_URL)
  url.pathname = `/${name}`
  return {
    url: url.toString(),
    name,
    drop: () => admin((c) => c.query(`drop database if exists ${name} with (force)`)).then(() => undefined),
  }
}
