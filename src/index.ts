/**
 * Plinth's public API: what an application imports (`import { defineModule } from 'plinth'`) to
 * write its own modules and run them on the platform. Everything else under src/ is internal.
 * The guide is docs/guides/build-a-module.md; the reference (docs/reference/) is generated from
 * this file's exports.
 *
 * @packageDocumentation
 */
import type { Logger } from 'pino'
import {
  createPlinth as createPlinthRoot,
  defaultModules,
  type Plinth,
  useApplicationModules,
} from './app/create-plinth.ts'
import { handleProcessSignals } from './app/lifecycle.ts'
import type { PlinthConfig } from './config/config.schema.ts'
import { loadConfig } from './config/load-config.ts'
import type { PlinthModule } from './core/module.ts'
import { runCli } from './main.ts'

/** Kysely helpers for migrations and queries (`sql`, and the types of generated columns). */
export { type ColumnType, type Generated, type Insertable, type Kysely, type Selectable, sql } from 'kysely'
/** TypeBox (the `typebox` package Plinth validates with): `Type.Object({ … })`, `Static<typeof S>`. */
export { type Static, type TSchema, Type } from 'typebox'
export type { Plinth } from './app/create-plinth.ts'
export type { PlinthConfig } from './config/config.schema.ts'
export { loadConfig } from './config/load-config.ts'
export {
  type AuditCaller,
  type AuditEntry,
  actorOf,
  auditCallerOf,
  auditDiff,
  callerEntry,
} from './core/audit.ts'
export {
  defineModule,
  type ModuleApi,
  type ModuleDefinition,
  type ModuleMetrics,
  type ModuleTables,
} from './core/define-module.ts'
export type { EmitOptions, EmitResult } from './core/events.ts'
export type { UserDirectory, UserSummary } from './core/identity.ts'
export {
  defineImportable,
  type ImportableDataset,
  type ImportReport,
} from './core/import.ts'
export {
  defineJob,
  type EnqueueOptions,
  type JobContext,
  type JobDefinition,
  type JobPolicy,
  type ScheduleInput,
} from './core/jobs.ts'
export type {
  BuiltinSchedule,
  ModuleContext,
  ModulePermissionDeclaration,
  PlinthApp,
  PlinthMigration,
  PlinthModule,
} from './core/module.ts'
export {
  type AnyPermission,
  type ModulePermission,
  type Permission,
  type Principal,
  principalCan,
  ROLES,
  type Role,
} from './core/permissions.ts'
export type {
  ErasureRule,
  PersonalColumn,
  PersonalDataMatch,
  PersonalDataSubject,
  PersonalDataTable,
} from './core/privacy.ts'
export { deleteInBatches, type RetentionRule, type RetentionRun } from './core/retention.ts'
export type { Actor } from './core/security-events.ts'
export type { RateLimitTier } from './http/route-config.ts'
export type { CheckResult, ComponentStatus, HealthCheck } from './observability/health.ts'
export type { Metrics } from './observability/metrics.ts'
export {
  type ErrorCode,
  type FieldError,
  type ModuleErrorCode,
  type ModuleErrorDeclaration,
  PlinthError,
} from './shared/errors.ts'

export interface ApplicationOptions {
  /** The application's modules, loaded after Plinth's built-in ones (accounts, jobs, audit, privacy…). */
  readonly modules: readonly PlinthModule[]
}

export interface CreateApplicationOptions extends ApplicationOptions {
  /** Defaults to `loadConfig()`: the environment, then `.env` in the working directory. */
  readonly config?: PlinthConfig
  readonly logger?: Logger
}

/**
 * Builds (without starting) a Plinth with the built-in modules and the application's. Call
 * `prepare()` to connect and migrate, `listen()` to serve, `shutdown()` to stop.
 */
export function createPlinth(options: CreateApplicationOptions): Promise<Plinth> {
  return createApplication(options, false)
}

function createApplication(options: CreateApplicationOptions, prepareEarly: boolean): Promise<Plinth> {
  useApplicationModules(options.modules)
  return createPlinthRoot({
    config: options.config ?? loadConfig(),
    modules: defaultModules(),
    ...(options.logger ? { logger: options.logger } : {}),
    prepareEarly,
  })
}

/**
 * Starts serving (role `PLINTH_ROLE`, migrations per `PLINTH_MIGRATE_ON_START`) and shuts down
 * gracefully on SIGTERM or SIGINT. Returns the running Plinth.
 */
export async function startPlinth(options: CreateApplicationOptions): Promise<Plinth> {
  // As `plinth start` does: the database steps begin while the server is built.
  const plinth = await createApplication(options, true)
  handleProcessSignals(plinth, { logger: plinth.logger })
  await plinth.listen()
  return plinth
}

/**
 * An application's `main.ts`: the `plinth` command with the application's modules loaded, so that
 * `node main.ts start` serves them and `node main.ts migrate up`, `privacy export`, `retention run`,
 * `jobs list`… see their tables, jobs and personal data. Without arguments it starts the server.
 * Exits the process with the command's exit code.
 *
 * @example
 * // main.ts
 * import { runPlinth } from 'plinth'
 * import { notes } from './src/notes.module.ts'
 * await runPlinth({ modules: [notes] })
 */
export async function runPlinth(
  options: ApplicationOptions & { readonly argv?: readonly string[] },
): Promise<never> {
  useApplicationModules(options.modules)
  const argv = options.argv ?? process.argv.slice(2)
  const code = await runCli(argv.length === 0 ? ['start'] : argv)
  process.exit(code)
}
