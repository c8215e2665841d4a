import type { FastifyContextConfig, FastifyRequest } from 'fastify'
import type { AnyPermission, Principal } from '../core/permissions.ts'
import { ROUTE_CONFIG, routeConfig as readRouteConfig } from '../core/route-config.ts'
import type { ErrorCode, ModuleErrorCode } from '../shared/errors.ts'

/** Rate-limit tiers (requests per window, configurable): see http/plugins/rate-limit.ts. */
export type RateLimitTier = 'api' | 'auth' | 'upload'

/** What a route may declare in its `config`, read by Plinth's plugins. */
declare module 'fastify' {
  interface FastifyContextConfig {
    /** Serve this route even under pressure (liveness, metrics: the signals operators need then). */
    pressureExempt?: boolean
    /** The route needs no authentication. Every route declares either this or `permission`. */
    public?: boolean
    /**
     * The permission a caller needs; 401 without a principal, 403 without the permission. A
     * built-in one (core/permissions.ts) or one a loaded module declares in `permissions`.
     */
    permission?: AnyPermission
    /** Reachable by a session that must still enrol a second factor (MFA policy of its role). */
    allowDuringMfaEnrolment?: boolean
    /** The rate-limit tier; `false` exempts the route (probes). Default: `api`. */
    rateLimit?: RateLimitTier | false
    /**
     * The account a request targets (e.g. the normalised e-mail of a sign-in), read after body
     * validation: the request then also counts against that account's budget in the route's tier.
     */
    rateLimitAccount?: (request: FastifyRequest) => string | undefined
    /**
     * The Content-Security-Policy of this route's responses, replacing the one its path prefix gets
     * (http/plugins/security-headers.ts: `'none'` for the API, a relaxed one under /api/docs).
     */
    csp?: string
    /**
     * The error codes this route's own code can answer with, for the OpenAPI document. The generic
     * ones (validation, authentication, rate limit, database, 500) are derived from the route's
     * schema and config by http/plugins/openapi.ts and need not be listed. A module's own codes
     * (its `errors`) may be listed too; a code neither built in nor declared stops the boot.
     */
    errors?: readonly (ErrorCode | ModuleErrorCode)[]
    /** The route touches no database (the document then lists no 503 `PLINTH_DB_*`). Default: it does. */
    database?: false
    /**
     * Operator access (http/plugins/ops-access.ts: a caller from `PLINTH_OPS_NETWORKS` or holding
     * `PLINTH_OPS_TOKEN`): `required` answers others 403, `details` answers others less. For the
     * OpenAPI document, which then names the `opsToken` scheme.
     */
    operators?: 'required' | 'details'
    /**
     * A long-lived answer (server-sent events) that may stay open for hours: once its headers go
     * (a 2xx), it leaves `http_requests_in_flight` and is recorded (duration: the time to its
     * headers, `http_requests_total`, the `request completed` line); its end records nothing more.
     */
    stream?: boolean
  }
  interface FastifyRequest {
    /** The authenticated caller, or null; set by the accounts module's authentication hook. */
    principal: Principal | null
  }
}

/**
 * The matched route's `config` (its `url` is the route template; undefined when no route matched),
 * read once per request: core/route-config.ts, typed here with Fastify's route config.
 */
export const routeConfig: (request: FastifyRequest) => FastifyContextConfig & { url?: string } =
  readRouteConfig

export { ROUTE_CONFIG }
