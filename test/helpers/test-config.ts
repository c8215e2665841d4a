import type { PlinthConfig } from '../../src/config/config.schema.ts'
import { loadConfig } from '../../src/config/load-config.ts'

/** A valid `PLINTH_MASTER_KEY` (base64 of 32 bytes) for staging and production test configs. */
export const TEST_MASTER_KEY = Buffer.alloc(32, 7).toString('base64')

/**
 * A test configuration: the in-memory embedded database, port 0, quiet logs, no .env file, no
 * backup schedule, no load shedding on event-loop delay (a loaded CI machine would answer 503 to
 * tests of other things; test/pressure.test.ts turns it on to test it).
 * `env` adds or overrides variables, exactly as the environment would.
 */
export function testConfig(env: Record<string, string | undefined> = {}): PlinthConfig {
  return loadConfig({
    env: {
      PLINTH_ENV: 'test',
      PLINTH_DATA_DIR: 'memory://',
      PORT: '0',
      PLINTH_LOG_LEVEL: 'silent',
      // No hourly backup in the middle of other tests (test/backups.test.ts turns it on).
      PLINTH_BACKUP_CRON: 'off',
      // Nor the daily audit verification (test/audit-verify-job.test.ts runs it).
      PLINTH_AUDIT_VERIFY_CRON: 'off',
      // No built-in alerting opening incidents (and queueing their notifications) under other tests.
      PLINTH_ALERTS_ENABLED: 'false',
      // No files sweep schedule either (test/files-operate.test.ts runs the sweep itself).
      PLINTH_FILES_SWEEP_CRON: 'off',
      PLINTH_MAX_EVENT_LOOP_DELAY: '0',
      ...env,
    },
    envFile: false,
  })
}
