// docs/operations/metrics.md, rendered from the metrics registry of a Plinth built with the
// built-in modules and without a database (nothing connects, nothing is scraped).
import { createPlinth } from '../src/app/create-plinth.ts'
import { loadConfig } from '../src/config/load-config.ts'
import { renderMetricsDocs } from '../src/observability/metrics-docs.ts'

export async function metricsDocument(): Promise<string> {
  const config = loadConfig({
    env: {
      PLINTH_ENV: 'test',
      // Never connected: the page needs the registered metrics, not their values.
      DATABASE_URL: 'postgres://plinth@127.0.0.1:9/metrics',
      PORT: '0',
      PLINTH_LOG_LEVEL: 'silent',
      PLINTH_SHUTDOWN_DELAY: '0',
      // Optional parts that register metrics of their own.
      PLINTH_BACKUP_DIR: '/nonexistent/plinth-metrics-doc',
      PLINTH_BACKUP_CRON: '0 * * * *',
      REDIS_URL: 'redis://127.0.0.1:9',
      PLINTH_PITR_STANZA: 'plinth',
    },
    envFile: false,
  })
  const plinth = await createPlinth({ config })
  try {
    return renderMetricsDocs(plinth.metrics.registry)
  } finally {
    await plinth.shutdown()
  }
}

if (import.meta.main) process.stdout.write(await metricsDocument())
