/**
 * One benchmark server, run as a child of `bench/http/run.ts` (never on its own): `bare` is Fastify
 * with no logger and no plugins, `plinth` is Plinth's full HTTP stack built by `createPlinth`.
 * Both serve `GET /api/v1` on 127.0.0.1 with an ephemeral port. Over the IPC channel (see
 * bench/lib/server-child.ts) the child sends `{ type: 'ready', port }` or `{ type: 'failed', message }`;
 * the parent sends `'stop'` for a graceful close. A lost channel (the parent died) or a signal ends
 * the child too.
 */
import Fastify from 'fastify'
import { Type } from 'typebox'
import { createPlinth } from '../../src/app/create-plinth.ts'
import { loadConfig } from '../../src/config/load-config.ts'
import { PLINTH_VERSION } from '../../src/core/version.ts'
import { createLogger, logDestination } from '../../src/observability/logger.ts'
import { portOf, productionEnv, type Running, requireParent, serveChild } from '../lib/server-child.ts'

export type ServerKind = 'bare' | 'plinth'
/** Plinth with tracing on (bench/http/tracing.ts): argv `plinth-traced <OTLP endpoint> <sampling ratio>`. */
export const TRACED_KIND = 'plinth-traced'

const HOST = '127.0.0.1'

/** The same route as src/modules/system/system.module.ts: path, response schema and handler body. */
async function startBare(): Promise<Running> {
  const ApiInfo = Type.Object({
    name: Type.Literal('plinth'),
    version: Type.String(),
    api: Type.Literal('v1'),
  })
  const app = Fastify({ logger: false })
  app.get('/api/v1', { schema: { response: { 200: ApiInfo } } }, async () => ({
    name: 'plinth' as const,
    version: PLINTH_VERSION,
    api: 'v1' as const,
  }))
  await app.listen({ port: 0, host: HOST })
  return { port: portOf(app.server.address()), close: () => app.close() }
}

/**
 * Plinth as production runs it: JSON logs at `info` written to a real (if discarded) file, the
 * whole plugin stack, the embedded database in memory. Only the shutdown delay differs (it is
 * spent after the measurement, never on the hot path).
 */
async function startPlinth(tracing?: { endpoint: string; ratio: string }): Promise<Running> {
  // `plinth-traced` (bench/http/tracing.ts): tracing on, exporting over OTLP to the parent's sink.
  const traced = tracing
    ? {
        OTEL_EXPORTER_OTLP_ENDPOINT: tracing.endpoint,
        OTEL_TRACES_SAMPLER: 'parentbased_traceidratio',
        OTEL_TRACES_SAMPLER_ARG: tracing.ratio,
      }
    : {}
  const config = loadConfig({
    env: { ...productionEnv(HOST), PLINTH_DATA_DIR: 'memory://', ...traced },
    envFile: false,
  })
  // The same buffered asynchronous destination createLogger uses for stdout in production.
  const logger = createLogger(config, logDestination('/dev/null'))
  const plinth = await createPlinth({ config, logger })
  await plinth.listen()
  return { port: portOf(plinth.app.server.address()), close: () => plinth.shutdown() }
}

requireParent('bench/http/server.ts runs as a child of bench/http/run.ts')
const kind = process.argv[2]
if (kind !== 'bare' && kind !== 'plinth' && kind !== TRACED_KIND)
  throw new Error(`unknown server kind "${kind}"`)
const [endpoint = '', ratio = '1'] = process.argv.slice(3)
await serveChild(
  kind === 'bare'
    ? startBare
    : kind === 'plinth'
      ? () => startPlinth()
      : () => startPlinth({ endpoint, ratio }),
  ({ port }) => ({ port }),
)
