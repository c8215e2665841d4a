import { createHash } from 'node:crypto'
import type { Kysely } from 'kysely'
import {
  type Migration,
  type MigrationInfo,
  type MigrationResultSet,
  Migrator,
  NO_MIGRATIONS,
} from 'kysely/migration'
import type { Logger } from 'pino'
import { PlinthError } from '../../shared/errors.ts'
import type { Database } from './create-db.ts'

/**
 * One reversible migration. The name is `NNNN-what-it-does`: the number orders migrations across
 * all modules and is what `plinth migrate down --to N` names.
 */
export interface PlinthMigration {
  // biome-ignore lint/suspicious/noExplicitAny: migrations run before (and independently of) the table types
  up(db: Kysely<any>): Promise<void>
  // biome-ignore lint/suspicious/noExplicitAny: see above
  down(db: Kysely<any>): Promise<void>
}

const NAME = /^(\d{4})-[a-z0-9]+(?:-[a-z0-9]+)*$/

export const MIGRATION_TABLE = 'plinth_migrations'
export const MIGRATION_LOCK_TABLE = 'plinth_migrations_lock'

export interface MigrationStatus {
  readonly number: number
  readonly name: string
  readonly appliedAt: Date | null
}

export interface PlinthMigrator {
  /** Applies every pending migration, or those numbered up to `to`; returns the names applied. */
  up(options?: { to?: number }): Promise<string[]>
  /** Reverts the last migration, or every migration above number `to` (0 reverts all). */
  down(options?: { to?: number }): Promise<string[]>
  status(): Promise<MigrationStatus[]>
  /** How many known migrations are not applied. */
  pendingCount(): Promise<number>
}

/**
 * Checks names and numbers: `NNNN-kebab-name`, numbers unique across modules.
 * Throws on the first bad entry, naming it.
 */
export function assertMigrations(migrations: Readonly<Record<string, PlinthMigration>>): void {
  const seen = new Map<string, string>()
  for (const name of Object.keys(migrations)) {
    const m = NAME.exec(name)
    if (!m) throw new Error(`migration name "${name}" must look like 0001-create-things`)
    const other = seen.get(m[1]!)
    if (other) throw new Error(`migrations "${other}" and "${name}" share the number ${m[1]}`)
    seen.set(m[1]!, name)
  }
}

const numberOf = (name: string) => Number(name.slice(0, 4))

/**
 * Identifies a migration set for the embedded database's migrated template (template.ts): the
 * names in order and the source text of each `up` and `down`. Editing a migration in place changes
 * the key; a change only in a helper a migration imports does not (migrations are meant to be
 * self-contained; `rm -r node_modules/.cache/plinth` forgets every template).
 */
export function migrationSetKey(migrations: Readonly<Record<string, PlinthMigration>>): string {
  const hash = createHash('sha256')
  for (const name of Object.keys(migrations).sort()) {
    const m = migrations[name]!
    hash.update(`${name}\0${String(m.up)}\0${String(m.down)}\0`)
  }
  return hash.digest('hex').slice(0, 16)
}

function unwrap(result: MigrationResultSet, direction: string, log: Logger): string[] {
  const done = (result.results ?? []).filter((r) => r.status === 'Success').map((r) => r.migrationName)
  if (result.error) {
    const failed = result.results?.find((r) => r.status === 'Error')?.migrationName
    const cause = result.error as Error
    throw new PlinthError(
      'PLINTH_MIGRATION_FAILED',
      `Migration ${direction}${failed ? ` of ${failed}` : ''} failed and was rolled back: ${cause.message ?? String(cause)}`,
      { cause },
    )
  }
  for (const name of done) log.info({ migration: name, direction }, 'migration applied')
  return done
}

/**
 * Numbered, reversible migrations on Kysely's migrator. Each run happens in one transaction that
 * first takes `pg_advisory_xact_lock` (Kysely's PostgreSQL adapter), so replicas starting together
 * migrate exactly once: the others wait for the lock, then find nothing pending.
 */
export function createMigrator(
  db: Database,
  migrations: Readonly<Record<string, PlinthMigration>>,
  deps: { logger: Logger },
): PlinthMigrator {
  assertMigrations(migrations)
  const log = deps.logger.child({ component: 'migrator' })
  const migrator = new Migrator({
    db: db.kysely,
    provider: { getMigrations: async () => migrations as unknown as Record<string, Migration> },
    migrationTableName: MIGRATION_TABLE,
    migrationLockTableName: MIGRATION_LOCK_TABLE,
  })
  const infos = (): Promise<readonly MigrationInfo[]> => migrator.getMigrations()
  const known = Object.keys(migrations)
  /** The names applied, from one plain query; undefined when there is no migration table yet. */
  const appliedNames = async (): Promise<Set<string> | undefined> => {
    try {
      const { rows } = await db.pool.query<{ name: string }>(`select name from ${MIGRATION_TABLE}`)
      return new Set(rows.map((r) => r.name))
    } catch (err) {
      if ((err as { code?: string }).code !== '42P01') throw err
      return undefined
    }
  }
  const nameOf = (n: number): string => {
    const name = Object.keys(migrations).find((m) => numberOf(m) === n)
    if (!name)
      throw new PlinthError(
        'PLINTH_MIGRATION_UNKNOWN',
        `No migration has the number ${n}; \`plinth migrate status\` lists them.`,
      )
    return name
  }

  return Object.freeze({
    async up(options: { to?: number } = {}) {
      if (options.to === undefined) {
        // A restart finds every migration applied: one read says so, where Kysely's migrator would
        // check and create its tables and take its lock first (about ten statements).
        const applied = await appliedNames()
        if (applied && applied.size === known.length && known.every((name) => applied.has(name))) return []
        // A new embedded cluster then holds exactly this set: createPlinth keeps it as the migrated
        // template (with the job engine's schema, decision 0039).
        return unwrap(await migrator.migrateToLatest(), 'up', log)
      }
      const target = nameOf(options.to)
      const applied = (await infos()).filter((i) => i.executedAt).map((i) => numberOf(i.name))
      // "up" never reverts anything: a target at or below the newest applied migration is a no-op.
      if (options.to <= Math.max(0, ...applied)) return []
      return unwrap(await migrator.migrateTo(target), 'up', log)
    },
    async down(options: { to?: number } = {}) {
      if (options.to === undefined) return unwrap(await migrator.migrateDown(), 'down', log)
      const target = options.to === 0 ? NO_MIGRATIONS : nameOf(options.to)
      const applied = (await infos()).filter((i) => i.executedAt).map((i) => numberOf(i.name))
      // "down" never applies anything: a target at or above the newest applied migration is a no-op.
      if (options.to >= Math.max(0, ...applied)) return []
      return unwrap(await migrator.migrateTo(target), 'down', log)
    },
    async status() {
      return (await infos()).map((i) => ({
        number: numberOf(i.name),
        name: i.name,
        appliedAt: i.executedAt ?? null,
      }))
    },
    async pendingCount() {
      // One plain query instead of Kysely's introspection (it checks and creates its tables first):
      // /ready and /health call this.
      const applied = (await appliedNames()) ?? new Set<string>() // no migration table yet: nothing applied
      return known.filter((name) => !applied.has(name)).length
    },
  } satisfies PlinthMigrator)
}
