/**
 * `defineModule`: how an application (or any third party) writes a Plinth module through the
 * public API (`import { defineModule } from 'plinth'`). It returns an ordinary `PlinthModule`, so
 * the root loads it exactly like a built-in one — same migrations lock, permission check on every
 * route, rate-limit tiers, audit log, job engine, personal-data registry and retention runner —
 * and adds two things for its author:
 * - its routes are mounted under `/api/v1/<name>`;
 * - its context (`ModuleApi<Tables>`) types `ctx.db` with the module's own tables only.
 */
import type { Kysely } from 'kysely'
import { Counter, Histogram, type Registry } from 'prom-client'
import type { HealthCheck } from '../observability/health.ts'
import { type ErrorCode, type FieldError, PlinthError } from '../shared/errors.ts'
import type { AuditEntry } from './audit.ts'
import type { EmitOptions, EmitResult } from './events.ts'
import type { EnqueueOptions, EnqueueResult, JobDefinition, JobEngine } from './jobs.ts'
import type { BuiltinSchedule, ModuleContext, PlinthApp, PlinthModule } from './module.ts'
import type { RetentionRule } from './retention.ts'

/** A module's own tables, as Kysely types them: `{ machines: MachineTable; readings: ReadingTable }`. */
// biome-ignore lint/complexity/noBannedTypes: a module without tables declares none
export type ModuleTables = {}

/** The metrics a module adds to `/api/metrics` (Prometheus), on the instance's registry. */
export interface ModuleMetrics {
  /** The instance's prom-client registry, for metric types the helpers below do not cover. */
  readonly registry: Registry
  /** A gauge read at scrape time. */
  gauge(name: string, help: string, read: () => number): void
  /** A counter (name it `*_total`); asking again for the same name returns the same counter. */
  counter<L extends string = never>(name: string, help: string, labelNames?: readonly L[]): Counter<L>
  /** A histogram (seconds by default buckets); asking again for the same name returns the same one. */
  histogram<L extends string = never>(
    name: string,
    help: string,
    options?: { labelNames?: readonly L[]; buckets?: number[] },
  ): Histogram<L>
}

/**
 * What a module's code gets: the module context with the database typed by the module's tables
 * (`ctx.db`), the audit log and the event bus taking its transactions.
 */
export interface ModuleApi<Tables = ModuleTables>
  extends Omit<ModuleContext, 'db' | 'audit' | 'events' | 'jobs' | 'metrics'> {
  /** The module's name. */
  readonly module: string
  /**
   * Kysely, typed with this module's tables only: naming another module's table does not compile.
   * Transactions: `ctx.db.transaction().execute(async (trx) => { … })`.
   */
  readonly db: Kysely<Tables>
  /** The audit log: `record(trx, entry)` writes a row in the transaction of the change it records. */
  readonly audit: {
    record(db: Kysely<Tables>, entry: AuditEntry): Promise<void>
  }
  /** Emits events (each a signed delivery to every matching webhook); `{ db: trx }` ties them to a commit. */
  readonly events: {
    emit(
      type: string,
      data: unknown,
      options?: Omit<EmitOptions, 'db'> & { readonly db?: Kysely<Tables> | undefined },
    ): Promise<EmitResult>
  }
  /** Durable jobs; `enqueue(name, payload, { db: trx })` creates the job only if the transaction commits. */
  readonly jobs: Omit<JobEngine, 'enqueue'> & {
    enqueue(
      name: string,
      payload: unknown,
      options?: Omit<EnqueueOptions, 'db'> & { readonly db?: Kysely<Tables> | undefined },
    ): Promise<EnqueueResult>
  }
  readonly metrics: ModuleMetrics
  /**
   * An error with one of this module's codes (declared in `errors`), to throw from a route, a job
   * or a hook: answered as `application/problem+json` with the code's status and title, and
   * `detail` (the declared one when left out). A code the module did not declare throws a plain
   * error (a 500): declare it.
   * @example throw ctx.error('NOTES_LOCKED', `note ${id} is locked until ${until}`)
   */
  error(
    code: string,
    detail?: string,
    options?: { readonly errors?: readonly FieldError[]; readonly headers?: Record<string, string> },
  ): PlinthError
  /** The built-in context (database handle, full Kysely over every table): for what the above does not cover. */
  readonly platform: ModuleContext
}

/** What `defineModule` takes: a `PlinthModule` whose hooks see `ModuleApi<Tables>`. */
export interface ModuleDefinition<Tables = ModuleTables>
  extends Omit<
    PlinthModule,
    'routes' | 'plugins' | 'provides' | 'jobs' | 'schedules' | 'retention' | 'healthChecks' | 'start'
  > {
  /**
   * Registers the module's routes; they are mounted under `/api/v1/<name>` (a route `'/things'`
   * answers `/api/v1/<name>/things`). Each declares `config: { permission }` (one of Plinth's or of
   * a module's `permissions`) or `config: { public: true }`, and may set `config.rateLimit`
   * (`'api'` by default, `'auth'`, `'upload'`).
   */
  readonly routes?: (app: PlinthApp, ctx: ModuleApi<Tables>) => Promise<void> | void
  /** Job types this module runs (see `defineJob`). */
  // biome-ignore lint/suspicious/noExplicitAny: each definition carries its own payload type
  readonly jobs?: (ctx: ModuleApi<Tables>) => readonly JobDefinition<any>[]
  /** Cron schedules of this module's jobs, created or updated by workers at start. */
  readonly schedules?: (ctx: ModuleApi<Tables>) => readonly BuiltinSchedule[]
  /** What the retention job deletes of this module's tables (see `deleteInBatches`). */
  readonly retention?: (ctx: ModuleApi<Tables>) => readonly RetentionRule[]
  /** Checks `/health` (and `/ready`, when `critical`) runs. */
  readonly healthChecks?: (ctx: ModuleApi<Tables>) => readonly HealthCheck[]
  /** Runs at start once migrations are current. */
  readonly start?: (ctx: ModuleApi<Tables>) => Promise<void>
}

function moduleMetrics(ctx: ModuleContext): ModuleMetrics {
  const registry = ctx.metrics.registry
  return {
    registry,
    gauge: (name, help, read) => ctx.metrics.gauge(name, help, read),
    counter<L extends string = never>(name: string, help: string, labelNames: readonly L[] = []) {
      const existing = registry.getSingleMetric(name)
      if (existing instanceof Counter) return existing as Counter<L>
      return new Counter<L>({ name, help, labelNames, registers: [registry] })
    },
    histogram<L extends string = never>(
      name: string,
      help: string,
      options: { labelNames?: readonly L[]; buckets?: number[] } = {},
    ) {
      const existing = registry.getSingleMetric(name)
      if (existing instanceof Histogram) return existing as Histogram<L>
      return new Histogram<L>({
        name,
        help,
        labelNames: options.labelNames ?? [],
        ...(options.buckets ? { buckets: options.buckets } : {}),
        registers: [registry],
      })
    },
  }
}

/**
 * Defines a module through the public API.
 *
 * @typeParam Tables - the module's own tables (Kysely row types): `ctx.db` sees only these.
 * @example
 * interface Tables { notes: { id: Generated<string>; owner_id: string; body: string } }
 * export const notes = defineModule<Tables>({
 *   name: 'notes',
 *   permissions: { 'notes:write': { roles: ['admin', 'operator', 'member'] } },
 *   migrations: { '1001-create-notes': { up: async (db) => …, down: async (db) => … } },
 *   routes(app, ctx) {
 *     app.post('/', { config: { permission: 'notes:write' }, schema: { body: NoteBody } }, …)
 *   },
 * })
 */
export function defineModule<Tables = ModuleTables>(definition: ModuleDefinition<Tables>): PlinthModule {
  const { routes, jobs, schedules, retention, healthChecks, start, ...rest } = definition
  const apis = new WeakMap<ModuleContext, ModuleApi<Tables>>()
  const moduleError: ModuleApi<Tables>['error'] = (code, detail, options = {}) => {
    if (!Object.hasOwn(definition.errors ?? {}, code))
      throw new Error(`module "${definition.name}" declares no error code "${code}": add it to its errors`)
    // Declared at boot (app/module-checks.ts), so the registry knows its status and title.
    return new PlinthError(code as ErrorCode, detail, {
      ...(options.errors ? { errors: options.errors } : {}),
      ...(options.headers ? { headers: options.headers } : {}),
    })
  }
  const api = (ctx: ModuleContext): ModuleApi<Tables> => {
    let built = apis.get(ctx)
    if (!built) {
      built = Object.freeze({
        ...ctx,
        module: definition.name,
        db: ctx.db.kysely as unknown as Kysely<Tables>,
        audit: ctx.audit as unknown as ModuleApi<Tables>['audit'],
        events: ctx.events as unknown as ModuleApi<Tables>['events'],
        jobs: ctx.jobs as unknown as ModuleApi<Tables>['jobs'],
        metrics: moduleMetrics(ctx),
        error: moduleError,
        platform: ctx,
      })
      apis.set(ctx, built)
    }
    return built
  }
  return Object.freeze({
    ...rest,
    ...(routes
      ? {
          routes: async (app: PlinthApp, ctx: ModuleContext) => {
            await app.register(async (scoped) => routes(scoped as PlinthApp, api(ctx)), {
              prefix: `/${definition.name}`,
            })
          },
        }
      : {}),
    ...(jobs ? { jobs: (ctx: ModuleContext) => jobs(api(ctx)) } : {}),
    ...(schedules ? { schedules: (ctx: ModuleContext) => schedules(api(ctx)) } : {}),
    ...(retention ? { retention: (ctx: ModuleContext) => retention(api(ctx)) } : {}),
    ...(healthChecks ? { healthChecks: (ctx: ModuleContext) => healthChecks(api(ctx)) } : {}),
    ...(start ? { start: (ctx: ModuleContext) => start(api(ctx)) } : {}),
  })
}
