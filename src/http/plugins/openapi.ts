import swagger from '@fastify/swagger'
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'

export interface OpenApiOptions {
  readonly version: string
  /** Serve the docs UI at /api/docs. */
  readonly docsUi: boolean
}

/**
 * The OpenAPI 3.1 document, generated from the route schemas so it cannot drift, at
 * `/api/openapi.json`; the docs UI at `/api/docs` when enabled. Registered before any route,
 * so that every route is seen.
 */
async function openapi(app: FastifyInstance, opts: OpenApiOptions): Promise<void> {
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Plinth API',
        version: opts.version,
        description:
          'Errors are application/problem+json (RFC 9457) with a stable `code` and the `requestId`.',
      },
      tags: [{ name: 'operations', description: 'Probes and metrics' }],
    },
  })
  app.get(
    '/api/openapi.json',
    { schema: { hide: true }, config: { pressureExempt: true, public: true } },
    async () => app.swagger(),
  )
  if (opts.docsUi) {
    const { default: swaggerUi } = await import('@fastify/swagger-ui')
    await app.register(swaggerUi, { routePrefix: '/api/docs', uiConfig: { deepLinking: false } })
  }
}

export default fp(openapi, { name: 'plinth-openapi', fastify: '5.x' })
