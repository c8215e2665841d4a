import type { IncomingMessage, ServerResponse } from 'node:http'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import type { FastifyBaseLogger, FastifyInstance, RawServerDefault } from 'fastify'
import type { EncryptedColumn } from '../infra/crypto/encrypted-column.ts'
import type { Keyring } from '../infra/crypto/keyring.ts'
import type { PlinthMigration } from '../infra/db/migrator.ts'
import type { HealthCheck } from '../observability/health.ts'
import type { ModuleErrorDeclaration } from '../shared/errors.ts'
import type { Audit } from './audit.ts'
import type { EventBus } from './events.ts'
import type { UserDirectory } from './identity.ts'
import type { ImportableDataset } from './import.ts'
import type { InstanceLauncher } from './instances.ts'
import type { JobDefinition, JobEngine, ScheduleInput, Schedules } from './jobs.ts'
import type { Mailer } from './mail.ts'
import type { Role } from './permissions.ts'
import type { PersonalDataTable, RegisteredPersonalData } from './privacy.ts'
import type { AdapterContext, ServiceProviders } from './provides.ts'
import type { Retention, RetentionRule } from './retention.ts'

/** The Fastify instance Plinth builds (TypeBox as the type provider): what module routes are registered on. */
export type PlinthApp = FastifyInstance<
  RawServerDefault,
  IncomingMessage,
  ServerResponse,
  FastifyBaseLogger,
  TypeBoxTypeProvider
>

/** One reversible migration (defined with the migrator, which runs them). */
export type { PlinthMigration }

/** What a module gets from the composition root: the adapters, plus the services modules provide. */
export interface ModuleContext extends AdapterContext {
  /** Sends e-mail through SMTP_URL, or captures it in the log in development and test. */
  readonly mailer: Mailer
  /**
   * Encrypts stored secrets (AES-256-GCM under the active data key, bound to their row) and follows
   * key rotations; read values back with `decryptStringAsync`, which reloads keys rotated elsewhere.
   */
  readonly keyring: Keyring
  /** The audit log: `record(trx, entry)` writes a row in the transaction of the change it records. */
  readonly audit: Audit
  /** Durable jobs: enqueue (optionally inside a transaction), inspect, retry, cancel. */
  readonly jobs: JobEngine
  /** Cron schedules that enqueue jobs. */
  readonly schedules: Schedules
  /** Emits events (`emit(type, data, { db })`): each becomes a signed delivery to every matching webhook. */
  readonly events: EventBus
  /** Every module's `personalData` declarations, checked at boot (what export and erasure work from). */
  readonly personalData: readonly RegisteredPersonalData[]
  /**
   * People's accounts (core/identity.ts), as the module that provides them (accounts) answers;
   * a call throws when no module does.
   */
  readonly users: UserDirectory
  /** The runner over every module's retention rules (what the built-in `plinth.retention` job runs). */
  readonly retention: Retention
  /**
   * The clock (ms since the epoch) of code whose outcome depends on elapsed time — sessions,
   * lockouts, token and link expiry: `Date.now`, unless the root was given another (tests move it
   * instead of sleeping).
   */
  readonly now: () => number
  /**
   * Starts another Plinth in a process of its own on a given database (core/instances.ts): how a
   * disaster-recovery drill proves that a restored copy serves.
   */
  readonly instances: InstanceLauncher
  /** Every module's `backupPaths` declarations (what backups copy besides the database). */
  readonly backupPaths: readonly RegisteredBackupPath[]
}

/**
 * A local directory a module keeps state in besides the database (uploaded files on disk …):
 * backups copy every regular file under it, list each (path, size, SHA-256) in the manifest, and a
 * restore puts them back where the restoring instance's module declares the same `name`.
 */
export interface BackupPathDeclaration {
  /** Stable within the module (`files`): what matches a backup's copy to a restoring instance's directory. */
  readonly name: string
  /** Absolute or relative to the working directory. */
  readonly path: string
  readonly description?: string
}

export interface RegisteredBackupPath extends BackupPathDeclaration {
  readonly module: string
}

/** One permission a module declares: who holds it, and what it allows (for the API docs). */
export interface ModulePermissionDeclaration {
  readonly roles: readonly Role[]
  readonly description?: string
}

/** A schedule a module always has, under a fixed id (created, or its cron updated, by workers at start). */
export interface BuiltinSchedule {
  readonly id: string
  readonly input: ScheduleInput
}

/**
 * The contract a feature module implements. A module owns its tables (through its migrations),
 * its routes (mounted under `/api/v1`) and its health checks.
 */
export interface PlinthModule {
  readonly name: string
  readonly migrations?: Readonly<Record<string, PlinthMigration>>
  /**
   * Permissions this module adds to the roles (`'<module>:<action>': { roles: [...] }`), which its
   * routes then name in `config.permission`. Administrators get none implicitly: list them. A
   * name that is built in or declared by another module stops the boot.
   */
  readonly permissions?: Readonly<Record<string, ModulePermissionDeclaration>>
  /**
   * Registers cross-cutting plugins at the root, before any route (e.g. authentication hooks that
   * must see every route). Use fastify-plugin so that hooks and decorators are not encapsulated.
   */
  readonly plugins?: (app: PlinthApp, ctx: ModuleContext) => Promise<void> | void
  /** Registers routes; the instance is already prefixed with `/api/v1`. */
  readonly routes?: (app: PlinthApp, ctx: ModuleContext) => Promise<void> | void
  readonly healthChecks?: (ctx: ModuleContext) => readonly HealthCheck[]
  /**
   * Registers this module's metrics on `ctx.metrics.registry` (prom-client), once, when the root
   * builds the server: so they are at `/api/metrics` from the first scrape (counters at zero) and in
   * docs/operations/metrics.md, which is generated from the registry. Name them `plinth_<what>`,
   * counters ending in `_total`, with bounded label values.
   */
  readonly metrics?: (ctx: ModuleContext) => void
  /** Job types this module runs (see `defineJob`); workers start for them in the `worker` and `all` roles. */
  // biome-ignore lint/suspicious/noExplicitAny: each definition carries its own payload type
  readonly jobs?: (ctx: ModuleContext) => readonly JobDefinition<any>[]
  /** Built-in cron schedules of this module's jobs; workers ensure them once the engine runs. */
  readonly schedules?: (ctx: ModuleContext) => readonly BuiltinSchedule[]
  /**
   * What the built-in retention job (`plinth.retention`, `plinth retention run`) deletes for this
   * module: expired rows of its own tables, in bounded batches (see `deleteInBatches`).
   */
  readonly retention?: (ctx: ModuleContext) => readonly RetentionRule[]
  /**
   * Local directories this module keeps state in besides the database, which backups include (see
   * `BackupPathDeclaration`). Declare none for state kept elsewhere (an S3 bucket: tell operators to
   * turn on its versioning instead).
   */
  readonly backupPaths?: (ctx: ModuleContext) => readonly BackupPathDeclaration[]
  /** Runs at start once migrations are current (e.g. creating the first administrator). */
  readonly start?: (ctx: ModuleContext) => Promise<void>
  /**
   * Columns holding values encrypted with `ctx.keyring` (declared with `encryptedColumn()`), so that
   * `plinth keys rotate` re-encrypts them and `plinth keys status` counts them. Write and read them
   * with the entry's `aad(id)`. Tokens and passwords are hashed, not encrypted: they do not belong here.
   */
  readonly encryptedColumns?: readonly EncryptedColumn[]
  /**
   * Tables and columns holding personal data (see core/privacy.ts): `GET /api/v1/me/export` and
   * erasure (`DELETE /api/v1/me`, `plinth privacy erase`) are built from these declarations alone.
   * Every column that refers to a person (a user id, an e-mail address, an IP address, a user agent)
   * must be declared; test/privacy-export.test.ts fails on one that is not.
   */
  readonly personalData?: readonly PersonalDataTable[]
  /**
   * Contracts this module implements for the others (exactly one module provides each service, at
   * most one `users`); they reach them through the context (`ctx.audit`, `ctx.users`…), never
   * through this module's files. The services are built before anything else is asked of any
   * module, in the order of `PROVIDED_SERVICES` (core/provides.ts), each factory seeing the
   * adapters and the services before its own; `users` is built from the whole context on first use.
   */
  readonly provides?: ServiceProviders & {
    readonly users?: (ctx: ModuleContext) => UserDirectory
  }
  /**
   * Tables of this module that `plinth import <module> <dataset> <file|dir>` loads from JSON, NDJSON
   * or CSV files (see `defineImportable` in core/import.ts and docs/guides/import-and-migrate.md).
   */
  readonly importables?: readonly ImportableDataset[]
  /**
   * Error codes of this module (`'NOTES_LOCKED': { status: 409, title, detail }`), answered as
   * `application/problem+json` with that code when its code throws one (`ctx.error(code)` of
   * `defineModule`), listed in the OpenAPI document (a route names those it answers with in
   * `config.errors`) and by `plinth errors`. A code that is built in, starts with `PLINTH_` or is
   * declared by another module stops the boot.
   */
  readonly errors?: Readonly<Record<string, ModuleErrorDeclaration>>
}

// core/privacy.ts leaves the context its hooks get open, so that it need not import this file.
declare module './privacy.ts' {
  interface PrivacyHookContext extends ModuleContext {}
}
