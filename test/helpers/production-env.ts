import { randomBytes } from 'node:crypto'

/**
 * Variables a production configuration needs to load (every key production requires), with
 * throwaway secrets and quiet logs. Add a key here when production starts requiring it.
 */
export const PRODUCTION_ENV: Readonly<Record<string, string>> = Object.freeze({
  PLINTH_ENV: 'production',
  PLINTH_SECRET_KEY: randomBytes(32).toString('base64'),
  PLINTH_MASTER_KEY: randomBytes(32).toString('base64'),
  PLINTH_PUBLIC_URL: 'https://plinth.example.com',
  PLINTH_LOG_LEVEL: 'silent',
  // Production waits 5 s for load balancers on shutdown; tests have none.
  PLINTH_SHUTDOWN_DELAY: '0',
})
