/**
 * One benchmark server, run as a child of `bench/http/run.ts` (never on its own): `bare` is Fastify
 * with no logger and no plugins, `plinth` is Plinth's full HTTP stack built by `createPlinth`.
 * Both serve `GET /api/v1` on 127.0.0.1 with an ephemeral port; `bare` also serves `GET /live` (the
 * floor of the 1,000-users runs). `plinth` runs on the embedded database in memory, or on the
 * PostgreSQL database given as argv[3]; it adds one bench-only write route (WRITE in protocol.ts)
 * and one member signed in once over HTTP, whose bearer token it reports. Over the IPC channel
 * (see bench/lib/server-child.ts) the child sends `{ type: 'ready', port, token }` or
 * `{ type: 'failed', message }`; the parent sends `'stop'` for a graceful close. A lost channel
 * (the parent died) or a signal ends the child too.
 */
import type { Worker } from 'node:worker_threads'
import Fastify from 'fastify'
import { sql } from 'kysely'
import { Type } from 'typebox'
import { builtinModules } from '../../src/app/modules.ts'
import type { PlinthModule } from '../../src/core/module.ts'
import { PLINTH_VERSION } from '../../src/core/version.ts'
import { HOST, signInNewUser, startProductionPlinth } from '../lib/plinth-child.ts'
import { portOf, type Running, requireParent, serveChild } from '../lib/server-child.ts'
import { ITEMS, QUEUE_STATS, WRITE } from './protocol.ts'

export type ServerKind = 'bare' | 'plinth'
/** Plinth with tracing on (bench/http/tracing.ts): argv `plinth-traced <OTLP endpoint> <sampling ratio>`. */
export const TRACED_KIND = 'plinth-traced'

interface Started extends Running {
  readonly token: string
}

/** The same route as src/modules/system/system.module.ts: path, response schema and handler body. */
async function startBare(): Promise<Started> {
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
  // As src/http/ops-routes.ts: the same path, schema and body.
  app.get(
    '/live',
    { schema: { response: { 200: Type.Object({ status: Type.Literal('ok') }) } } },
    async () => ({ status: 'ok' as const }),
  )
  await app.listen({ port: 0, host: HOST })
  return { port: portOf(app.server.address()), token: '', close: () => app.close() }
}

/** The worker's session queue counters (its `queue-stats` message), or null without an embedded worker. */
function queueStats(worker: Worker | undefined): Promise<Record<string, number> | null> {
  if (!worker) return Promise.resolve(null)
  return new Promise((resolve) => {
    const done = (stats: Record<string, number> | null) => {
      clearTimeout(timer)
      worker.off('message', onMessage)
      resolve(stats)
    }
    const timer = setTimeout(() => done(null), 2000)
    const onMessage = (m: { type?: string; stats?: Record<string, number> }) => {
      if (m?.type === 'queue-stats') done(m.stats ?? null)
    }
    worker.on('message', onMessage)
    worker.postMessage({ type: 'queue-stats' })
  })
}

/**
 * POST WRITE: in one transaction, read a random one of ITEMS rows under a row lock and write it back
 * plus one (the shape of an ordinary update), answering the new value.
 */
const benchModule: PlinthModule = {
  name: 'bench-http',
  routes(api, ctx) {
    api.post(
      WRITE,
      {
        config: { permission: 'self:read' },
        schema: { response: { 200: Type.Object({ id: Type.Integer(), value: Type.Integer() }) } },
      },
      async () => {
        const id = 1 + Math.floor(Math.random() * ITEMS)
        return ctx.db.kysely.transaction().execute(async (trx) => {
          const { rows } = await sql<{ value: number }>`
            select value from bench_http_items where id = ${id} for update`.execute(trx)
          const value = rows[0]!.value + 1
          await sql`update bench_http_items set value = ${value} where id = ${id}`.execute(trx)
          return { id, value }
        })
      },
    )
    // The embedded database's session queue counters (null on PostgreSQL), read by users.ts before
    // and after a measured run: PGlite calls and how long open transactions left the session idle.
    api.get(
      QUEUE_STATS,
      {
        config: { permission: 'self:read' },
        schema: {
          response: {
            200: Type.Object({
              stats: Type.Union([Type.Record(Type.String(), Type.Number()), Type.Null()]),
            }),
          },
        },
      },
      async () => ({ stats: await queueStats(ctx.db.embedded?.worker()) }),
    )
  },
}

/**
 * Plinth as production runs it: JSON logs at `info` written to a real (if discarded) file, the
 * whole plugin stack, the embedded database in memory (or the PostgreSQL database of argv[3]).
 * Only the shutdown delay differs (it is spent after the measurement, never on the hot path).
 */
async function startPlinth(tracing?: { endpoint: string; ratio: string }): Promise<Started> {
  // `plinth-traced` (bench/http/tracing.ts): tracing on, exporting over OTLP to the parent's sink.
  const traced = tracing
    ? {
        OTEL_EXPORTER_OTLP_ENDPOINT: tracing.endpoint,
        OTEL_TRACES_SAMPLER: 'parentbased_traceidratio',
        OTEL_TRACES_SAMPLER_ARG: tracing.ratio,
      }
    : {}
  const databaseUrl = tracing ? undefined : process.argv[3]
  const running = await startProductionPlinth(
    {
      // BENCH_HTTP_DATA_DIR (users.ts, BENCH_USERS_DATA=file): a file-backed data directory, as npm start.
      ...(databaseUrl
        ? { DATABASE_URL: databaseUrl }
        : { PLINTH_DATA_DIR: process.env.BENCH_HTTP_DATA_DIR || 'memory://' }),
      // The same keys for every start on one scratch database (set by users.ts).
      ...(process.env.BENCH_HTTP_MASTER_KEY && process.env.BENCH_HTTP_SECRET_KEY
        ? {
            PLINTH_MASTER_KEY: process.env.BENCH_HTTP_MASTER_KEY,
            PLINTH_SECRET_KEY: process.env.BENCH_HTTP_SECRET_KEY,
          }
        : {}),
      ...traced,
    },
    [...builtinModules, benchModule],
  )
  const db = running.plinth.context.db.kysely
  await sql`create table if not exists bench_http_items (id integer primary key, value integer not null default 0)`.execute(
    db,
  )
  await sql`insert into bench_http_items (id) select generate_series(1, ${ITEMS}) on conflict do nothing`.execute(
    db,
  )
  const { token } = await signInNewUser(running, 'member')
  return { port: running.port, token, close: running.close }
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
  ({ port, token }) => ({ port, token }),
)
