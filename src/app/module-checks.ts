import type { PlinthModule } from '../core/module.ts'
import { declarePermissions } from '../core/permissions.ts'
import { declareErrorCodes } from '../shared/errors.ts'

/** A module's name: lower case, a letter first (it is also the `/api/v1/<name>` prefix of `defineModule`). */
export const MODULE_NAME = /^[a-z][a-z0-9-]{0,62}$/

/**
 * What the root checks of the modules it is given before it builds anything, built-in and
 * application modules alike; each failure throws an error naming the module and what to change,
 * and the boot stops:
 * - names well-formed and unique (an application module cannot take a built-in one's name);
 * - migrations reversible (`up` and `down` both functions) and their names unique across modules
 *   (numbers are checked by the migrator);
 * - permissions well-formed, not built in, declared by one module (then added to the roles);
 * - error codes well-formed, not built in nor `PLINTH_…`, declared by one module (then served).
 * Routes without a permission are refused when they are registered (accounts' authenticate plugin),
 * job types registered twice by the job engine, personal-data declarations by the privacy registry.
 */
export function assertModules(modules: readonly PlinthModule[]): void {
  const names = new Map<string, PlinthModule>()
  for (const m of modules) {
    if (typeof m.name !== 'string' || !MODULE_NAME.test(m.name))
      throw new Error(`module name ${JSON.stringify(m.name)} must be lower case, like "machines"`)
    const other = names.get(m.name)
    if (other === m) throw new Error(`module "${m.name}" is listed twice`)
    if (other) throw new Error(`two modules are named "${m.name}": rename yours`)
    names.set(m.name, m)
  }
  const migrationOwner = new Map<string, string>()
  for (const m of modules) {
    for (const [name, migration] of Object.entries(m.migrations ?? {})) {
      const owner = migrationOwner.get(name)
      if (owner) throw new Error(`modules "${owner}" and "${m.name}" both have the migration "${name}"`)
      migrationOwner.set(name, m.name)
      if (typeof migration?.up !== 'function')
        throw new Error(`migration "${name}" of module "${m.name}" has no up()`)
      if (typeof migration.down !== 'function')
        throw new Error(
          `migration "${name}" of module "${m.name}" is irreversible (no down()): every migration must be revertible with "plinth migrate down"`,
        )
    }
  }
  for (const m of modules) if (m.permissions) declarePermissions(m.name, m.permissions)
  for (const m of modules) if (m.errors) declareErrorCodes(m.name, m.errors)
}
