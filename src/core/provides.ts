/**
 * The services every module's context holds (`ctx.audit`, `ctx.keyring`, `ctx.mailer`, `ctx.jobs`,
 * `ctx.schedules`, `ctx.events`) are built by modules too: a module declares the ones it implements
 * in `provides` (core/module.ts), and the composition root builds them before any module is asked
 * for anything else, in the order of `PROVIDED_SERVICES`, each factory seeing the adapters and the
 * services built before its own. Exactly one module provides each; a second stops the boot.
 */
import type { Logger } from 'pino'
import type { PlinthConfig } from '../config/config.schema.ts'
import type { Cache } from '../infra/cache/cache.ts'
import type { RedisHandle } from '../infra/cache/redis.ts'
import type { EncryptedColumn } from '../infra/crypto/encrypted-column.ts'
import type { Keyring } from '../infra/crypto/keyring.ts'
import type { Database } from '../infra/db/create-db.ts'
import type { ErrorReports } from '../observability/error-reports.ts'
import type { Metrics } from '../observability/metrics.ts'
import type { Audit } from './audit.ts'
import type { EventBus } from './events.ts'
import type { JobEngine, Schedules } from './jobs.ts'
import type { Mailer } from './mail.ts'
import type { SecurityEvents } from './security-events.ts'

/** The adapters the root builds from the configuration, before any provided service. */
export interface AdapterContext {
  readonly config: PlinthConfig
  readonly logger: Logger
  readonly db: Database
  readonly metrics: Metrics
  /** Redis when configured: shared across replicas, may be down at any moment. */
  readonly redis: RedisHandle | undefined
  /** Redis-backed when configured, in-process otherwise (and whenever Redis fails). */
  readonly cache: Cache
  readonly securityEvents: SecurityEvents
  /**
   * Unexpected errors (a job's last failed attempt, an uncaught exception…): report them here; the
   * errors module groups and stores them (`GET /api/v1/admin/errors`).
   */
  readonly errorReports: ErrorReports
}

/** What a provider's factory gets besides the services built before its own. */
export interface ProvisionContext extends AdapterContext {
  /** Every module's `encryptedColumns`, checked and gathered (what the keyring rotates). */
  readonly encryptedColumns: readonly EncryptedColumn[]
}

/** The services modules provide to each other, by their name in the context. */
export interface ProvidedServices {
  readonly audit: Audit
  readonly keyring: Keyring
  readonly mailer: Mailer
  readonly jobs: JobEngine
  readonly schedules: Schedules
  readonly events: EventBus
}

/**
 * The order the root builds the provided services in: each may use those before it (the job
 * engine records administrators' actions in the audit log, schedules drive the job engine, events
 * become jobs). Shutdown closes them in the reverse order.
 */
export const PROVIDED_SERVICES = ['audit', 'keyring', 'mailer', 'jobs', 'schedules', 'events'] as const

export type ProvidedServiceName = (typeof PROVIDED_SERVICES)[number]

/** The services listed before `K` in `PROVIDED_SERVICES`. */
type Before<
  K extends ProvidedServiceName,
  L extends readonly ProvidedServiceName[] = typeof PROVIDED_SERVICES,
> = L extends readonly [
  infer H extends ProvidedServiceName,
  ...infer T extends readonly ProvidedServiceName[],
]
  ? H extends K
    ? never
    : H | Before<K, T>
  : never

/** What a built service brings with it: the value and its lifecycle. */
export interface Provision<T> {
  /** What the other modules get in the context. */
  readonly value: T
  /** Runs in `prepare()`, after migrations and before the modules start (e.g. loading the data keys). */
  readonly prepare?: () => Promise<void>
  /** Runs at shutdown after the server closed, in the reverse order of building (and on a failed boot). */
  readonly close?: () => Promise<void> | void
}

/**
 * A factory for one provided service: it gets the adapters and the services built before it.
 *
 * @example
 * provides: {
 *   mailer(ctx) {
 *     const mailer = createMailer(ctx)
 *     return { value: mailer, close: () => mailer.close() }
 *   },
 * }
 */
export type Provider<K extends ProvidedServiceName> = (
  ctx: ProvisionContext & Pick<ProvidedServices, Before<K>>,
) => Provision<ProvidedServices[K]>

/** The `provides` entries for the context's services, one optional factory per service. */
export type ServiceProviders = { readonly [K in ProvidedServiceName]?: Provider<K> }
