import { isIP } from 'node:net'
import { bool, duration, int, list, oneOf, optionalStr, ratio, size, str, url } from './config-parsers.ts'
import { type ConfigOf, PLINTH_ENVS, type PlinthEnv } from './config-types.ts'

const isLocal = (env: PlinthEnv) => env === 'development' || env === 'test'

/** Accepts `10.0.0.0/8`, `::1/128` or a bare address. */
function assertCidr(value: string): void {
  const [address = '', prefix] = value.split('/')
  const family = isIP(address)
  const max = family === 6 ? 128 : 32
  if (family === 0 || (prefix !== undefined && !(/^\d+$/.test(prefix) && Number(prefix) <= max))) {
    throw new Error(`"${value}" is not an IP address or CIDR range (e.g. 10.0.0.0/8, ::1/128)`)
  }
}

/**
 * Every configuration key Plinth reads. `docs/configuration.md` is generated from this table
 * (`npm run docs:generate`), and a test fails when the two drift apart.
 */
export const configSchema = {
  env: oneOf(PLINTH_ENVS, {
    env: 'PLINTH_ENV',
    default: 'development',
    doc: 'Deployment environment. `production` refuses unsafe settings; `development` enables pretty logs and error details.',
  }),
  role: oneOf(['all', 'api', 'worker'] as const, {
    env: 'PLINTH_ROLE',
    default: 'all',
    doc: 'What this process runs: `api` serves HTTP, `worker` runs background work (and serves only the operations endpoints), `all` does both. `plinth start --role` overrides it.',
  }),
  port: int({ env: 'PORT', default: 3000, min: 0, max: 65535, doc: 'TCP port the HTTP server listens on.' }),
  host: str({
    env: 'HOST',
    default: (env) => (isLocal(env) ? 'localhost' : '0.0.0.0'),
    defaultDoc: '`localhost` in development and test, `0.0.0.0` otherwise',
    doc: 'Interface the HTTP server binds to.',
  }),
  dataDir: str({
    env: 'PLINTH_DATA_DIR',
    default: './data',
    doc: 'Directory for local state: the embedded database (when `DATABASE_URL` is unset) and generated files.',
  }),
  secretKey: optionalStr({
    env: 'PLINTH_SECRET_KEY',
    secret: true,
    doc: 'Secret for signing cookies and tokens; at least 32 characters. Required in staging and production (e.g. `openssl rand -base64 48`).',
  }),
  revision: str({
    env: 'PLINTH_REVISION',
    default: 'unknown',
    doc: 'Source revision of this build, shown in `plinth_build_info` (the image build sets it).',
  }),
  publicUrl: url({
    env: 'PLINTH_PUBLIC_URL',
    protocols: ['http:', 'https:'],
    doc: 'The URL users reach Plinth at, used in links Plinth generates (e-mails, redirects).',
  }),

  databaseUrl: url({
    env: 'DATABASE_URL',
    protocols: ['postgres:', 'postgresql:'],
    secret: true,
    doc: 'PostgreSQL connection URL. Unset: the embedded database (PGlite) in `PLINTH_DATA_DIR`. Add `?sslmode=require` for TLS.',
  }),
  dbPoolMax: int({
    env: 'PLINTH_DB_POOL_MAX',
    default: 10,
    min: 1,
    max: 1000,
    doc: 'Maximum connections in the pool per process.',
  }),
  dbConnectTimeout: duration({
    env: 'PLINTH_DB_CONNECT_TIMEOUT',
    default: 5000,
    doc: 'How long one connection attempt may take.',
  }),
  dbStatementTimeout: duration({
    env: 'PLINTH_DB_STATEMENT_TIMEOUT',
    default: 30_000,
    doc: 'Server-side limit for one SQL statement (`statement_timeout`); 0 disables it.',
  }),
  dbIdleTimeout: duration({
    env: 'PLINTH_DB_IDLE_TIMEOUT',
    default: 30_000,
    doc: 'How long an idle pooled connection is kept.',
  }),
  dbConnectDeadline: duration({
    env: 'PLINTH_DB_CONNECT_DEADLINE',
    default: 60_000,
    doc: 'At start, how long to keep retrying (exponential backoff with jitter) before giving up.',
  }),
  migrateOnStart: bool({
    env: 'PLINTH_MIGRATE_ON_START',
    default: true,
    doc: 'Apply pending migrations at start, under an advisory lock (safe with many replicas). When false, run `plinth migrate up` yourself.',
  }),

  redisUrl: url({
    env: 'REDIS_URL',
    protocols: ['redis:', 'rediss:'],
    secret: true,
    doc: 'Redis connection URL. Optional: enables shared rate limits, caches and pub/sub across replicas.',
  }),
  redisPrefix: str({
    env: 'PLINTH_REDIS_PREFIX',
    default: 'plinth:',
    doc: 'Prefix for every Redis key Plinth writes.',
  }),

  replicas: int({
    env: 'PLINTH_REPLICAS',
    default: 1,
    min: 1,
    max: 1000,
    doc: 'How many replicas you run. More than one requires `DATABASE_URL` (the embedded database is single-process).',
  }),

  logLevel: oneOf(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const, {
    env: 'PLINTH_LOG_LEVEL',
    default: (env) => (env === 'development' ? 'debug' : env === 'test' ? 'warn' : 'info'),
    defaultDoc: '`debug` in development, `warn` in test, `info` otherwise',
    doc: 'Minimum level written to the log; `silent` turns logging off.',
  }),
  logFormat: oneOf(['json', 'pretty'] as const, {
    env: 'PLINTH_LOG_FORMAT',
    default: (env) => (env === 'development' ? 'pretty' : 'json'),
    defaultDoc: '`pretty` in development, `json` otherwise',
    doc: 'JSON lines, or human-readable output (development only).',
  }),
  logBodies: bool({
    env: 'PLINTH_LOG_BODIES',
    default: false,
    doc: 'Log request bodies at debug level (redacted). Refused in production.',
  }),

  bodyLimit: size({
    env: 'PLINTH_BODY_LIMIT',
    default: 1024 * 1024,
    doc: 'Largest request body accepted (413 above).',
  }),
  requestTimeout: duration({
    env: 'PLINTH_REQUEST_TIMEOUT',
    default: 60_000,
    doc: 'Time allowed to receive a whole request; protects against slow clients. 0 disables it.',
  }),
  trustProxy: list({
    env: 'PLINTH_TRUST_PROXY',
    default: [],
    item: assertCidr,
    doc: 'Addresses or CIDR ranges of reverse proxies whose `X-Forwarded-For` is trusted for the client IP.',
  }),
  corsOrigins: list({
    env: 'PLINTH_CORS_ORIGINS',
    default: [],
    doc: 'Origins allowed to call the API from a browser (e.g. `https://app.example.com`). Empty: no cross-origin access. `*` allows any origin, without credentials.',
  }),
  corsCredentials: bool({
    env: 'PLINTH_CORS_CREDENTIALS',
    default: false,
    doc: 'Allow cookies on cross-origin requests from `PLINTH_CORS_ORIGINS` (never with `*`).',
  }),
  apiDocs: bool({
    env: 'PLINTH_API_DOCS',
    default: (env) => env !== 'production',
    defaultDoc: '`false` in production, `true` otherwise',
    doc: 'Serve the API docs UI at `/api/docs` (the OpenAPI document at `/api/openapi.json` is always served).',
  }),

  opsNetworks: list({
    env: 'PLINTH_OPS_NETWORKS',
    default: ['127.0.0.0/8', '::1/128'],
    item: assertCidr,
    doc: 'Client networks treated as operators: they see `/health` details and may scrape `/api/metrics`.',
  }),
  opsToken: optionalStr({
    env: 'PLINTH_OPS_TOKEN',
    secret: true,
    doc: 'Bearer token that grants operator access to `/health` details and `/api/metrics` from anywhere (at least 32 characters).',
  }),
  metricsPublic: bool({
    env: 'PLINTH_METRICS_PUBLIC',
    default: false,
    doc: 'Let anyone scrape `/api/metrics`, not only operators.',
  }),
  healthTimeout: duration({
    env: 'PLINTH_HEALTH_TIMEOUT',
    default: 2000,
    doc: 'Longest a single health check may take before it counts as down.',
  }),

  shutdownDelay: duration({
    env: 'PLINTH_SHUTDOWN_DELAY',
    default: (env) => (isLocal(env) ? 0 : 5000),
    defaultDoc: '`0` in development and test, `5s` otherwise',
    doc: 'After SIGTERM, how long to keep accepting connections (with `/ready` at 503) so load balancers stop routing here.',
  }),
  shutdownTimeout: duration({
    env: 'PLINTH_SHUTDOWN_TIMEOUT',
    default: 30_000,
    doc: 'After the delay, how long in-flight requests and work may take before connections are cut.',
  }),
  maxEventLoopDelay: duration({
    env: 'PLINTH_MAX_EVENT_LOOP_DELAY',
    default: 1000,
    doc: 'Above this event-loop delay, requests get 503 with `Retry-After` instead of queueing. 0 disables the check.',
  }),
  maxHeapUsedRatio: ratio({
    env: 'PLINTH_MAX_HEAP_USED_RATIO',
    default: 0.95,
    doc: 'Above this share of the V8 heap limit, requests get 503 with `Retry-After`. 0 disables the check.',
  }),
} as const

export type PlinthConfig = ConfigOf<typeof configSchema>
