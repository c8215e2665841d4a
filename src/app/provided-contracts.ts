import type { UserDirectory } from '../core/identity.ts'
import type { ModuleContext, PlinthModule } from '../core/module.ts'
import {
  PROVIDED_SERVICES,
  type ProvidedServiceName,
  type ProvidedServices,
  type Provision,
  type ProvisionContext,
} from '../core/provides.ts'

type ContractName = ProvidedServiceName | 'users'

/** The one module that provides a contract; two stop the boot. */
function providerOf(modules: readonly PlinthModule[], name: ContractName): PlinthModule | undefined {
  const providers = modules.filter((m) => m.provides?.[name])
  if (providers.length > 1)
    throw new Error(
      `Modules ${providers.map((m) => `"${m.name}"`).join(' and ')} all provide ${name} (ctx.${name}); ` +
        'exactly one may: leave out all but one of them.',
    )
  return providers[0]
}

/** The context's services, built, and what to run with them at prepare and shutdown. */
export interface ProvidedSet {
  readonly services: ProvidedServices
  /** Each service's `prepare()`, in build order (after migrations). */
  prepare(): Promise<void>
  /** Each service's `close()`, in reverse build order; a failing one is logged and the rest still close. */
  close(): Promise<void>
}

/**
 * Builds `ctx.audit`, `ctx.keyring`, `ctx.mailer`, `ctx.jobs`, `ctx.schedules` and `ctx.events`
 * from the modules that provide them, in the order of `PROVIDED_SERVICES`: each factory gets the
 * adapters and the services built before its own. A service that no module provides, or that two
 * do, stops the boot naming it; a factory that throws closes what was built before it.
 */
export async function provideServices(
  modules: readonly PlinthModule[],
  base: ProvisionContext,
): Promise<ProvidedSet> {
  const providers = PROVIDED_SERVICES.map((name) => {
    const module = providerOf(modules, name)
    if (!module)
      throw new Error(
        `No module provides ${name} (ctx.${name}): load the built-in module that does, or one of your own ` +
          `that declares provides.${name}.`,
      )
    return { name, module }
  })
  const built: Partial<Record<ProvidedServiceName, unknown>> = {}
  const provisions: { name: ProvidedServiceName; provision: Provision<unknown> }[] = []
  const close = async () => {
    for (const { name, provision } of provisions.toReversed()) {
      try {
        await provision.close?.()
      } catch (err) {
        base.logger.error({ err, service: name }, 'a provided service did not close cleanly')
      }
    }
  }
  try {
    for (const { name, module } of providers) {
      // Each factory is typed to see only the services before its own; built holds exactly those.
      const provide = module.provides?.[name] as (ctx: ProvisionContext) => Provision<unknown>
      const provision = provide(Object.freeze({ ...base, ...built }) as ProvisionContext)
      built[name] = provision.value
      provisions.push({ name, provision })
    }
  } catch (err) {
    await close()
    throw err
  }
  return {
    services: Object.freeze(built) as ProvidedServices,
    async prepare() {
      for (const { provision } of provisions) await provision.prepare?.()
    },
    close,
  }
}

/**
 * `ctx.users`: the directory the module that provides it (accounts) builds from the context, built
 * on first use (the context must exist first). Two providers stop the boot; with none, a call fails.
 */
export function providedUsers(modules: readonly PlinthModule[], context: () => ModuleContext): UserDirectory {
  const provide = providerOf(modules, 'users')?.provides?.users
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
    importUser: (db, input) => resolve().importUser(db, input),
    principalActive: (principal) => resolve().principalActive(principal),
  }
}
