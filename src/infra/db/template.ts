import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

/**
 * The pre-initialised cluster template. PGlite's initdb costs about 2 s of CPU in WebAssembly; a
 * new data directory instead starts from a dump of a fresh cluster (`dumpDataDir`), loaded with
 * `loadDataDir` in a few hundred milliseconds. The dump is made once per PGlite version and cached
 * beside the installed packages (`node_modules/.cache/plinth`), so only the very first start on a
 * machine pays for initdb.
 *
 * A second kind, the **migrated template**, is the same cluster right after a start applied every
 * migration of one migration set, keyed by that set (`migrationSetKey` in migrator.ts: the names and
 * the source of each `up`/`down`). A new data directory whose start would apply exactly that set
 * loads it instead and finds nothing pending. It is taken before anything else writes (data keys,
 * users, jobs), so it holds the schema only. A few sets are kept (tests and benchmarks add modules);
 * the oldest beyond MIGRATED_KEPT are deleted.
 */
const FORMAT = 1

/** PGlite's package directory (its package.json is not exported, so walk up from its entry). */
function pgliteRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.resolve('@electric-sql/pglite')))
  while (!existsSync(join(dir, 'package.json')) && dirname(dir) !== dir) dir = dirname(dir)
  return dir
}

function pgliteVersion(): string {
  return (JSON.parse(readFileSync(join(pgliteRoot(), 'package.json'), 'utf8')) as { version: string }).version
}

/** `<node_modules>/.cache/plinth`, found from where PGlite is installed (not from this file's path). */
function cacheDir(): string {
  // …/node_modules/@electric-sql/pglite → …/node_modules
  return join(dirname(dirname(pgliteRoot())), '.cache', 'plinth')
}

/** Where the template for the installed PGlite lives (it may not exist yet). */
export function templatePath(): string {
  return join(cacheDir(), `pglite-${pgliteVersion()}-cluster-v${FORMAT}.tar`)
}

const MIGRATED_KEPT = 8

/** Where the migrated template of the migration set `key` lives (it may not exist yet). */
export function migratedTemplatePath(key: string): string {
  return join(cacheDir(), `pglite-${pgliteVersion()}-migrated-${key}-v${FORMAT}.tar`)
}

/** Deletes the oldest migrated templates of this PGlite version beyond the MIGRATED_KEPT newest. */
export function pruneMigratedTemplates(dir = cacheDir()): void {
  const prefix = `pglite-${pgliteVersion()}-migrated-`
  try {
    const files = readdirSync(dir)
      .filter((f) => f.startsWith(prefix) && f.endsWith('.tar'))
      .map((f) => ({ path: join(dir, f), mtime: statSync(join(dir, f)).mtimeMs }))
      .sort((a, b) => b.mtime - a.mtime)
    for (const old of files.slice(MIGRATED_KEPT)) rmSync(old.path, { force: true })
  } catch {
    // Best effort: a cache that cannot be listed is only a cache.
  }
}

/** The cached template, or undefined when there is none (or it cannot be read). */
export function readTemplate(path = templatePath()): Blob | undefined {
  if (!existsSync(path)) return undefined
  try {
    return new Blob([readFileSync(path)])
  } catch {
    return undefined
  }
}

/** Stores a template atomically (a unique temporary file, then rename), so racing writers are safe. */
export async function writeTemplate(dump: Blob, path = templatePath()): Promise<void> {
  mkdirSync(dirname(path), { recursive: true })
  const tmp = `${path}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`
  try {
    writeFileSync(tmp, new Uint8Array(await dump.arrayBuffer()))
    renameSync(tmp, path)
  } finally {
    rmSync(tmp, { force: true })
  }
}

/** Drops a template that failed to load, so the next start rebuilds it. */
export function discardTemplate(path = templatePath()): void {
  rmSync(path, { force: true })
}
