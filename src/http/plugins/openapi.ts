import swagger from '@fastify/swagger'
import type { FastifyInstance, RouteOptions } from 'fastify'
import fp from 'fastify-plugin'
import { type Permission, ROLE_PERMISSIONS, ROLES } from '../../core/permissions.ts'
import { type ErrorCode, errorEntry, type ModuleErrorCode, moduleErrorCodes } from '../../shared/errors.ts'
import type { RateLimitTier } from '../route-config.ts'

export interface OpenApiOptions {
  readonly version: string
  /** Serve the docs UI at /api/docs. */
  readonly docsUi: boolean
}

// biome-ignore lint/suspicious/noExplicitAny: OpenAPI objects are plain JSON built and walked here
type Json = any

/** The names of the security schemes, as operations refer to them. */
export const SECURITY_SCHEMES = {
  bearer: 'bearerAuth',
  cookie: 'sessionCookie',
  csrf: 'csrfHeader',
  ops: 'opsToken',
} as const

const securitySchemes: Json = {
  [SECURITY_SCHEMES.bearer]: {
    type: 'http',
    scheme: 'bearer',
    description:
      'A session token (`pls_…`, from sign-in or sign-up) or an API token (`plt_…`, from `POST /api/v1/me/tokens`, ' +
      "whose scopes narrow its owner's role). No CSRF header is needed with a bearer token.",
  },
  [SECURITY_SCHEMES.cookie]: {
    type: 'apiKey',
    in: 'cookie',
    name: 'plinth_session',
    description:
      'The session cookie a browser gets at sign-in. Changes (every method but GET, HEAD and OPTIONS) also need ' +
      'the `X-CSRF-Token` header.',
  },
  [SECURITY_SCHEMES.csrf]: {
    type: 'apiKey',
    in: 'header',
    name: 'X-CSRF-Token',
    description:
      'The `csrfToken` of the session (answered by sign-in, sign-up and `GET /api/v1/me`); required with the ' +
      'session cookie on changes.',
  },
  [SECURITY_SCHEMES.ops]: {
    type: 'http',
    scheme: 'bearer',
    description:
      'Operator access to the operations endpoints: `PLINTH_OPS_TOKEN` as a bearer token. Callers from a network in ' +
      '`PLINTH_OPS_NETWORKS` (the client address as resolved through `PLINTH_TRUST_PROXY`) need no token.',
  },
}

const FieldError: Json = {
  type: 'object',
  required: ['in', 'field', 'message'],
  properties: {
    in: { type: 'string', description: 'body, querystring, params or headers' },
    field: { type: 'string', description: "The field's path, dot-separated (empty for the whole object)" },
    message: { type: 'string' },
  },
}

/** The RFC 9457 body every error answers with (http/plugins/problem-json.ts, problemBody). */
const Problem: Json = {
  type: 'object',
  description: 'An error (RFC 9457 problem details) with a stable `code`; docs/errors.md lists every code.',
  required: ['type', 'title', 'status', 'detail', 'code', 'requestId', 'instance'],
  properties: {
    type: { type: 'string', description: '`urn:plinth:error:` and the code' },
    title: { type: 'string' },
    status: { type: 'integer' },
    detail: { type: 'string', description: 'What went wrong and how to fix it' },
    code: { type: 'string', description: 'Stable error code (`PLINTH_<AREA>_<WHAT>`)' },
    requestId: { type: 'string', description: 'Also in the X-Request-Id header and the server logs' },
    instance: { type: 'string', description: 'The request path' },
    errors: {
      type: 'array',
      items: { $ref: '#/components/schemas/FieldError' },
      description: 'Each failing field (validation errors)',
    },
    debug: {
      type: 'object',
      description: 'Development only: the message and stack of a 5xx',
      properties: { message: { type: 'string' }, stack: { type: 'string' } },
    },
  },
}

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS'])

interface OperationFacts {
  readonly permission: Permission | 'public'
  readonly rateLimit: RateLimitTier | 'none'
  readonly errors: readonly (ErrorCode | ModuleErrorCode)[]
  readonly security: Json[]
  readonly description: string
}

/** Roles that hold a permission, for the description line. */
const rolesWith = (permission: Permission) => ROLES.filter((role) => ROLE_PERMISSIONS[role].has(permission))

/**
 * What the document says of a route beyond its schema: who may call it, its rate-limit tier and
 * every error code it can answer with — the generic ones derived here from its schema and config,
 * the route's own from `config.errors`.
 */
export function operationFacts(route: RouteOptions, url: string): OperationFacts {
  const config = (route.config ?? {}) as NonNullable<RouteOptions['config']> & Record<string, unknown>
  const schema = (route.schema ?? {}) as Record<string, unknown>
  const methods = [route.method].flat().map(String)
  const changes = methods.some((m) => !SAFE_METHODS.has(m))
  const isPublic = config.public === true
  const permission: Permission | 'public' = isPublic ? 'public' : (config.permission as Permission)
  const exemptPath = url.startsWith('/api/docs')
  const tier: RateLimitTier | 'none' =
    config.rateLimit === false || (exemptPath && config.rateLimit === undefined)
      ? 'none'
      : (config.rateLimit ?? 'api')
  const database = config.database !== false && (url.startsWith('/api/v1') || !isPublic)

  const errors: (ErrorCode | ModuleErrorCode)[] = []
  if (schema.params || schema.querystring) errors.push('PLINTH_HTTP_INVALID_REQUEST')
  // The text guard reads every query string, path parameter and body, declared or not.
  errors.push('PLINTH_HTTP_INVALID_TEXT')
  if (schema.params) errors.push('PLINTH_HTTP_URI_TOO_LONG')
  // A change's body is parsed whether the route declares one or not.
  if (changes)
    errors.push(
      'PLINTH_HTTP_MALFORMED_BODY',
      'PLINTH_HTTP_BODY_TOO_LARGE',
      'PLINTH_HTTP_UNSUPPORTED_MEDIA_TYPE',
    )
  if (schema.body) errors.push('PLINTH_HTTP_VALIDATION_FAILED')
  if (!isPublic) {
    errors.push('PLINTH_AUTH_REQUIRED', 'PLINTH_AUTH_SESSION_EXPIRED', 'PLINTH_AUTH_FORBIDDEN')
    if (!config.allowDuringMfaEnrolment) errors.push('PLINTH_AUTH_MFA_ENROLMENT_REQUIRED')
    if (changes) errors.push('PLINTH_AUTH_CSRF')
  }
  if (tier !== 'none') errors.push('PLINTH_HTTP_RATE_LIMITED')
  if (database) {
    errors.push('PLINTH_DB_UNAVAILABLE', 'PLINTH_DB_TIMEOUT')
    if (changes) errors.push('PLINTH_DB_CONFLICT')
  }
  if (!config.pressureExempt) errors.push('PLINTH_HTTP_OVERLOADED')
  errors.push('PLINTH_HTTP_SHUTTING_DOWN', 'PLINTH_INTERNAL')
  for (const code of config.errors ?? []) if (!errors.includes(code)) errors.push(code)

  const operators = config.operators
  const security = operators
    ? [{ [SECURITY_SCHEMES.ops]: [] }, {}]
    : isPublic
      ? []
      : [
          { [SECURITY_SCHEMES.bearer]: [] },
          changes
            ? { [SECURITY_SCHEMES.cookie]: [], [SECURITY_SCHEMES.csrf]: [] }
            : { [SECURITY_SCHEMES.cookie]: [] },
        ]
  const who =
    operators === 'required'
      ? 'Permission: operators (PLINTH_OPS_NETWORKS or PLINTH_OPS_TOKEN); others get 403.'
      : operators === 'details'
        ? 'Permission: none (public); operators (PLINTH_OPS_NETWORKS or PLINTH_OPS_TOKEN) get the details.'
        : isPublic
          ? 'Permission: none (public).'
          : `Permission: \`${permission}\` (roles: ${rolesWith(permission as Permission).join(', ') || 'none'}; an API token needs it in its scopes).`
  const limit =
    tier === 'none'
      ? 'Rate limit: none.'
      : `Rate limit: the \`${tier}\` tier (PLINTH_RATE_LIMIT_${tier.toUpperCase()})${
          config.rateLimitAccount ? ', also counted per account named in the body' : ''
        }.`
  return { permission, rateLimit: tier, errors, security, description: `${who} ${limit}` }
}

/**
 * A stable operation id from the method and path, for generated clients: `GET /api/v1/admin/users/:id`
 * is `getAdminUsersById`. A route may set its own `schema.operationId`.
 */
export function operationIdOf(method: string, url: string): string {
  const words = url
    .replace(/^\/api\/v1(?=\/|$)/, '')
    .split('/')
    .filter(Boolean)
    .flatMap((segment) => {
      const param = /^[:{](\w+)}?$/.exec(segment)
      return param ? ['by', param[1] as string] : segment.split(/[^A-Za-z0-9]+/)
    })
    .filter(Boolean)
  const name = words.map((w) => w[0]!.toUpperCase() + w.slice(1)).join('')
  return `${method.toLowerCase()}${name || 'ApiRoot'}`
}

/** A code's registry entry, built in or declared by a module (routes' codes are checked when they are added). */
function entryOf(code: string) {
  const entry = errorEntry(code)
  if (!entry) throw new Error(`the error code "${code}" is neither built in nor declared by a module`)
  return entry
}

/** The document's responses for a list of error codes, grouped by status. */
function errorResponses(codes: readonly string[]): Record<string, Json> {
  const byStatus = new Map<number, string[]>()
  for (const code of codes) {
    const status = entryOf(code).status
    byStatus.set(status, [...(byStatus.get(status) ?? []), code])
  }
  const responses: Record<string, Json> = {}
  for (const [status, list] of [...byStatus].sort(([a], [b]) => a - b)) {
    responses[String(status)] = {
      description: list.map((code) => `\`${code}\`: ${entryOf(code).title}`).join('; '),
      content: {
        'application/problem+json': {
          schema: {
            allOf: [
              { $ref: '#/components/schemas/Problem' },
              { type: 'object', properties: { code: { type: 'string', enum: list } } },
            ],
          },
        },
      },
    }
  }
  return responses
}

/** Descriptions of success responses whose schema gives none (instead of "Default Response"). */
const STATUS_TEXT: Record<string, string> = {
  '200': 'OK',
  '201': 'Created',
  '202': 'Accepted',
  '204': 'No Content',
  '503': 'Service Unavailable',
}

const EXT = { permission: 'x-plinth-permission', rateLimit: 'x-plinth-rate-limit' } as const
/** Carries the codes from `transform` to `transformObject`, which turns them into responses. */
const ERRORS_KEY = 'x-plinth-errors'
/** The top-level list of the codes the application's modules declare: `{ code, module, status, title, detail }`. */
export const MODULE_ERRORS_KEY = 'x-plinth-module-errors'
const HTTP_METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'] as const

/**
 * The OpenAPI 3.1 document, generated from the route schemas so it cannot drift, at
 * `/api/openapi.json`; the docs UI at `/api/docs` when enabled. Registered before any route,
 * so that every route is seen. Each operation gets its security requirement, its permission and
 * rate-limit tier (`x-plinth-permission`, `x-plinth-rate-limit` and a line of its description)
 * and a problem+json response per error status it can answer, listing the codes.
 */
async function openapi(app: FastifyInstance, opts: OpenApiOptions): Promise<void> {
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Plinth API',
        version: opts.version,
        description:
          'Errors are application/problem+json (RFC 9457) with a stable `code` and the `requestId`; each ' +
          'operation lists the codes it can answer with. Any request can also be refused before routing: ' +
          '`PLINTH_HTTP_NOT_FOUND` (404), `PLINTH_HTTP_METHOD_NOT_ALLOWED` (405), `PLINTH_HTTP_BAD_URL` ' +
          '(400), `PLINTH_HTTP_HEADERS_TOO_LARGE` (431), `PLINTH_HTTP_REQUEST_TIMEOUT` (408).',
        license: { name: 'MIT', identifier: 'MIT' },
      },
      servers: [{ url: '/', description: 'This Plinth' }],
      tags: [
        { name: 'operations', description: 'Probes and metrics' },
        { name: 'system', description: 'The API root' },
        { name: 'auth', description: 'Sign-up, sign-in, sign-out, password reset' },
        { name: 'me', description: "The caller's own account" },
        { name: 'admin', description: 'Administration of accounts' },
        { name: 'audit', description: 'The audit log' },
        { name: 'jobs', description: 'Background jobs' },
        { name: 'schedules', description: 'Cron schedules of jobs' },
        { name: 'webhooks', description: 'Outbound webhooks and events' },
      ],
      components: {
        securitySchemes,
        schemas: { Problem, FieldError },
      },
    },
    transform: ({ schema, url: routeUrl, route }) => {
      // `/api/v1/` (the API root, a module's `/` under the prefix) is listed without the slash.
      const url = routeUrl.length > 1 ? routeUrl.replace(/\/$/, '') : routeUrl
      const facts = operationFacts(route as RouteOptions, url)
      const own = (schema ?? {}) as Record<string, unknown>
      const description = [own.description, facts.description].filter(Boolean).join('\n\n')
      return {
        url,
        schema: {
          ...own,
          operationId: own.operationId ?? operationIdOf(String([route.method].flat()[0]), url),
          description,
          security: facts.security,
          [EXT.permission]: facts.permission,
          [EXT.rateLimit]: facts.rateLimit,
          [ERRORS_KEY]: facts.errors,
        } as unknown as typeof schema,
      }
    },
    transformObject: (documentObject) => {
      const doc = (documentObject as Json).openapiObject
      for (const item of Object.values<Json>(doc.paths ?? {})) {
        for (const method of HTTP_METHODS) {
          const operation = item[method]
          if (!operation?.[ERRORS_KEY]) continue
          const codes: string[] = operation[ERRORS_KEY]
          delete operation[ERRORS_KEY]
          for (const [status, response] of Object.entries<Json>(operation.responses))
            if (response.description === 'Default Response')
              response.description = STATUS_TEXT[status] ?? `HTTP ${status}`
          for (const [status, response] of Object.entries(errorResponses(codes))) {
            const existing = operation.responses[status]
            // A status the route answers with its own body too (the 503 of /ready): both media types.
            if (existing) existing.content = { ...existing.content, ...response.content }
            else operation.responses[status] = response
          }
        }
      }
      // The application's own codes (modules' `errors`), which docs/errors.md does not list.
      const declared = moduleErrorCodes()
      if (declared.length > 0)
        doc[MODULE_ERRORS_KEY] = declared.map(({ code, module, status, title, detail }) => ({
          code,
          module,
          status,
          title,
          detail,
        }))
      return doc
    },
  })
  // A route naming a code nobody declared stops the boot (rather than the document's generation).
  app.addHook('onRoute', (route) => {
    for (const code of route.config?.errors ?? [])
      if (!errorEntry(code))
        throw new Error(
          `route ${[route.method].flat().join(',')} ${route.url} lists the error code "${code}" in config.errors, which is neither built in nor declared by a module's errors`,
        )
  })
  app.get(
    '/api/openapi.json',
    { schema: { hide: true }, config: { pressureExempt: true, public: true } },
    async () => app.swagger(),
  )
  if (opts.docsUi) {
    const { default: swaggerUi } = await import('@fastify/swagger-ui')
    await app.register(swaggerUi, {
      routePrefix: '/api/docs',
      uiConfig: { deepLinking: false, persistAuthorization: false },
    })
  }
}

export default fp(openapi, { name: 'plinth-openapi', fastify: '5.x' })
