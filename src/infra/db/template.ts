import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

/**
 * The pre-initialised cluster template. PGlite's initdb costs about 2 s of CPU in WebAssembly; a
 * new data directory instead starts from a dump of a fresh cluster (`dumpDataDir`), loaded with
 * `loadDataDir` in a few hundred milliseconds. The dump is made once per PGlite version and cached
 * beside the installed packages (`node_modules/.cache/plinth`), so only the very first start on a
 * machine pays for initdb. Migrations are not part of it: they run on every start as before.
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
