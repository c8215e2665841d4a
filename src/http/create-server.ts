import { readFileSync } from 'node:fs'
import cors from '@fastify/cors'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import Fastify, {
  type FastifyBaseLogger,
  type FastifyHttpOptions,
  LogController,
  type RawServerDefault,
} from 'fastify'
import type { Logger } from 'pino'
import type { PlinthConfig } from '../config/config.schema.ts'
import type { ModuleContext, PlinthApp, PlinthModule } from '../core/module.ts'
import type { Health } from '../observability/health.ts'
import type { Metrics } from '../observability/metrics.ts'
import { pickRequestId, REQUEST_ID_HEADER } from '../observability/request-id.ts'
import { PlinthError } from '../shared/errors.ts'
import { createValidatorCompiler } from '../shared/validation.ts'
import { clientErrorHandler, frameworkErrorHandler } from './edge-errors.ts'
import { lazySchemas } from './lazy-schemas.ts'
import { opsRoutes } from './ops-routes.ts'
import openapi from './plugins/openapi.ts'
import opsAccess from './plugins/ops-access.ts'
import pressure from './plugins/pressure.ts'
import problemJson from './plugins/problem-json.ts'
import rateLimit, { RATE_LIMIT_HEADERS } from './plugins/rate-limit.ts'
import requestContext from './plugins/request-context.ts'
import securityHeaders from './plugins/security-headers.ts'
import textGuard from './plugins/text-guard.ts'
import tracing from './plugins/tracing.ts'
import { ROUTE_CONFIG } from './route-config.ts'

export type { PlinthApp }

export interface CreateServerOptions {
  readonly config: PlinthConfig
  readonly logger: Logger
  readonly metrics: Metrics
  readonly health: Health
  readonly modules: readonly PlinthModule[]
  readonly context: ModuleContext
  readonly version: string
  readonly startedAt: number
  /** Serve the application routes under /api/v1 (role `api` or `all`); otherwise only operations. */
  readonly serveApi: boolean
  readonly isShuttingDown: () => boolean
  /** One span per request (plugins/tracing.ts); only while the tracing SDK runs. */
  readonly tracing?: boolean
}

/**
 * Builds the Fastify instance with every cross-cutting plugin, the operations routes and each
 * module's routes under `/api/v1`. It does not listen; `createPlinth` decides when.
 */
export async function createServer(opts: CreateServerOptions): Promise<PlinthApp> {
  const { config } = opts
  // Direct TLS when both files are set (checked at config load); otherwise the proxy terminates it.
  const https =
    config.tlsCertFile && config.tlsKeyFile
      ? {
          cert: readFileSync(config.tlsCertFile),
          key: readFileSync(config.tlsKeyFile),
          minVersion: 'TLSv1.2',
        }
      : undefined
  const hsts = config.env === 'production' || https !== undefined
  // Validators and serializers compiled on each route's first use, not at ready (lazy-schemas.ts).
  const schemas = lazySchemas(createValidatorCompiler())
  const app = Fastify({
    // Fastify types the factories after @fastify/ajv-compiler's own signature; ours take route schemas.
    schemaController: { compilersFactory: schemas.compilersFactory as never },
    loggerInstance: opts.logger as FastifyBaseLogger,
    // Fastify's own per-request lines are off: request-context.ts writes one line per request.
    logController: new LogController({ disableRequestLogging: true, requestIdLogLabel: 'requestId' }),
    genReqId: (req) => pickRequestId(req.headers[REQUEST_ID_HEADER]),
    bodyLimit: config.bodyLimit,
    requestTimeout: config.requestTimeout,
    trustProxy: config.trustProxy.length > 0 ? [...config.trustProxy] : false,
    return503OnClosing: true,
    forceCloseConnections: 'idle',
    // Errors answered before any hook runs get Plinth's shape too (edge-errors.ts).
    frameworkErrors: frameworkErrorHandler(hsts),
    clientErrorHandler: clientErrorHandler(hsts, opts.logger),
    ...(https ? { https } : {}),
  } as FastifyHttpOptions<RawServerDefault>).withTypeProvider<TypeBoxTypeProvider>()
  app.decorate('compileSchemas', () => schemas.compileAll())
  // The API speaks JSON: without this, Fastify's built-in text/plain parser hands a string to JSON
  // routes (a confusing 422) instead of answering 415. A route that wants text registers its own parser.
  app.removeContentTypeParser('text/plain')

  app.decorateRequest('principal', null)
  // The route config, read once per request by routeConfig() (route-config.ts).
  app.decorateRequest(ROUTE_CONFIG, null)
  if (opts.tracing) await app.register(tracing)
  // First, so that every answer carries the headers, including those of later hooks (503, 429).
  await app.register(securityHeaders, { hsts })
  await app.register(problemJson, { development: config.env === 'development' })
  await app.register(textGuard)
  await app.register(requestContext, { metrics: opts.metrics, logBodies: config.logBodies })
  await app.register(opsAccess, { networks: config.opsNetworks, token: config.opsToken })
  await app.register(pressure, {
    maxEventLoopDelay: config.maxEventLoopDelay,
    maxHeapUsedRatio: config.maxHeapUsedRatio,
  })
  await app.register(openapi, { version: opts.version, docsUi: config.apiDocs })
  if (config.corsOrigins.length > 0) {
    const anyOrigin = config.corsOrigins.includes('*')
    // @fastify/cors answers an OPTIONS request that is no valid preflight with a text/plain 400:
    // refused here first, as problem+json.
    app.addHook('onRequest', (request, _reply, done) => {
      if (
        request.method === 'OPTIONS' &&
        (!request.headers.origin || !request.headers['access-control-request-method'])
      ) {
        done(
          new PlinthError(
            'PLINTH_HTTP_BAD_REQUEST',
            'A CORS preflight (OPTIONS) needs the Origin and Access-Control-Request-Method headers.',
          ),
        )
        return
      }
      done()
    })
    await app.register(cors, {
      origin: anyOrigin ? '*' : [...config.corsOrigins],
      credentials: config.corsCredentials && !anyOrigin,
      methods: ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'],
      exposedHeaders: [REQUEST_ID_HEADER, 'retry-after', ...RATE_LIMIT_HEADERS],
      maxAge: 600,
    })
  }

  // Before the modules' plugins: it refuses flooding addresses before authentication runs, and
  // counts in preParsing, once authentication has set `request.principal`.
  await app.register(rateLimit, {
    limits: { api: config.rateLimitApi, auth: config.rateLimitAuth, upload: config.rateLimitUpload },
    windowMs: config.rateLimitWindow,
    redis: opts.context.redis,
    metrics: opts.metrics,
    logger: opts.logger,
  })
  for (const module of opts.modules) await module.plugins?.(app, opts.context)

  await app.register(opsRoutes, {
    health: opts.health,
    metrics: opts.metrics,
    metricsPublic: config.metricsPublic,
    version: opts.version,
    revision: config.revision,
    startedAt: opts.startedAt,
    isShuttingDown: opts.isShuttingDown,
  })

  if (config.staticDir) {
    // Loaded only when a static app is served.
    const { default: staticSite } = await import('./plugins/static-site.ts')
    await app.register(staticSite, {
      root: config.staticDir,
      prefix: config.staticPrefix,
      csp: config.staticCsp,
    })
  }

  if (opts.serveApi) {
    await app.register(
      async (api) => {
        for (const module of opts.modules) await module.routes?.(api, opts.context)
      },
      { prefix: '/api/v1' },
    )
  }
  return app
}
