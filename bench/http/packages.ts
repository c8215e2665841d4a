/**
 * Fastify's own packages: routing, the plugin loader, `inject`. Both profile readers
 * (profile.ts for `--cpu-prof`, perf.ts for `perf record`) charge their frames to Fastify's core
 * rather than to a package of their own.
 */
export const FASTIFY_CORE_PACKAGES: ReadonlySet<string> = new Set([
  'fastify',
  'find-my-way',
  'avvio',
  'light-my-request',
])

/** The package a file of `node_modules` belongs to (`@scope/name` or `name`), else undefined. */
export function packageOf(path: string): string | undefined {
  return /\/node_modules\/((?:@[\w.-]+\/)?[\w.-]+)\//.exec(path)?.[1]
}
