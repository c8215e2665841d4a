import type { UserDirectory } from '../core/identity.ts'
import type { ModuleContext, PlinthModule } from '../core/module.ts'

/**
 * `ctx.users`: the directory the module that provides it (accounts) builds from the context, built
 * on first use (the context must exist first). Two providers stop the boot; with none, a call fails.
 */
export function providedUsers(modules: readonly PlinthModule[], context: () => ModuleContext): UserDirectory {
  const providers = modules.filter((m) => m.provides?.users)
  if (providers.length > 1)
    throw new Error(`Modules ${providers.map((m) => m.name).join(', ')} all provide users; at most one may.`)
  const provide = providers[0]?.provides?.users
  let directory: UserDirectory | undefined
  const resolve = (): UserDirectory => {
    if (!provide) throw new Error('No module provides user accounts (is the accounts module loaded?).')
    directory ??= provide(context())
    return directory
  }
  return {
    get: (userId) => resolve().get(userId),
    list: (filter) => resolve().list(filter),
    reauthenticate: (userId, input, meta) => resolve().reauthenticate(userId, input, meta),
  }
}
