import type { Logger } from 'pino'
import type { PlinthConfig } from '../../src/config/config.schema.ts'
import { createPlinth, type Plinth } from '../../src/core/create-plinth.ts'
import type { PlinthModule } from '../../src/core/module.ts'
import { builtinModules } from '../../src/modules/index.ts'
import { testConfig } from './test-config.ts'
import { createTestDatabase } from './test-database.ts'

export type Backend = 'embedded' | 'postgres'

export interface TestPlinth extends Plinth {
  /** Shuts down and drops the test database; safe to call twice. */
  close(): Promise<void>
}

/**
 * A prepared (connected, migrated) Plinth on the chosen backend: an in-memory PGlite, or a fresh
 * database on the test PostgreSQL server. Use `app.inject()` against it, or `listen()`.
 */
export async function startTestPlinth(
  options: {
    backend?: Backend
    env?: Record<string, string | undefined>
    modules?: readonly PlinthModule[]
    logger?: Logger
    config?: PlinthConfig
    prepare?: boolean
  } = {},
): Promise<TestPlinth> {
  const backend = options.backend ?? 'embedded'
  const testDb = backend === 'postgres' ? await createTestDatabase() : undefined
  const config =
    options.config ?? testConfig({ ...(testDb ? { DATABASE_URL: testDb.url } : {}), ...options.env })
  const plinth = await createPlinth({
    config,
    ...(options.logger ? { logger: options.logger } : {}),
    modules: [...builtinModules, ...(options.modules ?? [])],
  })
  let closed: Promise<void> | undefined
  const close = () => {
    closed ??= (async () => {
      try {
        await plinth.shutdown()
      } finally {
        await testDb?.drop()
      }
    })()
    return closed
  }
  if (options.prepare !== false) {
    try {
      await plinth.prepare()
    } catch (err) {
      await close()
      throw err
    }
  }
  return Object.assign(Object.create(plinth) as Plinth, { close }) as TestPlinth
}
