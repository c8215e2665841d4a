import {
  constants,
  cpSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
} from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Worker } from 'node:worker_threads'

/**
 * The pre-initialised cluster template. PGlite's initdb costs about 2 s of CPU in WebAssembly; a
 * new data directory instead starts from a dump of a fresh cluster (`dumpDataDir`), loaded with
 * `loadDataDir` in a few hundred milliseconds. The dump is made once per PGlite version and cached
 * beside the installed packages (`node_modules/.cache/plinth`), so only the very first start on a
 * machine pays for initdb.
 *
 * A second kind, the **migrated template**, is the same cluster right after a start applied every
 * migration of one migration set and installed the job engine's schema and queues (decision 0039),
 * keyed by both (createPlinth: `migrationSetKey` in migrator.ts — the names and the source of each
 * `up`/`down` — and the engine's `template.key`, pg-boss' schema version). A new data directory
 * whose start would apply exactly that set loads it instead and finds nothing pending and its
 * queues there. It is taken before anything else writes (data keys, users, jobs), so it holds the
 * schema only. A few sets are kept (tests and benchmarks add modules); the oldest beyond
 * MIGRATED_KEPT are deleted.
 *
 * Loading a tar still costs about 2 s (PGlite untars 40 MB into its file system and writes it out),
 * against ~0.6 s for opening an existing cluster. So a file-backed cluster's migrated template is
 * also kept as a **ready cluster directory** (`…-migrated-<key>-v1.cluster/`), built once from the
 * tar by a short-lived worker (template-dir-worker.ts) after a start that used the tar: a new data
 * directory copies it and opens it as an existing cluster (the copy, ~1 s here, starts before the
 * migration set is known, from the directory used last: decision 0039). In-memory databases keep
 * using the tar.
 * The directory is complete or absent (built in a temporary directory, then renamed); one that
 * fails to open is deleted and the tar is used instead (decision 0034).
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

/** Where the migrated template of the migration set `key` lives as a ready cluster directory (it may not exist yet). */
export function migratedTemplateDirPath(key: string): string {
  return join(cacheDir(), `pglite-${pgliteVersion()}-migrated-${key}-v${FORMAT}.cluster`)
}

/** Written last into a template directory before it is renamed into place: its presence says it is whole. */
export const TEMPLATE_DIR_MARK = 'plinth-template'

/** Deletes the oldest migrated templates (tars and directories) of this PGlite version beyond the MIGRATED_KEPT newest of each kind. */
export function pruneMigratedTemplates(dir = cacheDir()): void {
  const prefix = `pglite-${pgliteVersion()}-migrated-`
  for (const suffix of ['.tar', '.cluster']) {
    try {
      const files = readdirSync(dir)
        .filter((f) => f.startsWith(prefix) && f.endsWith(suffix))
        .map((f) => ({ path: join(dir, f), mtime: statSync(join(dir, f)).mtimeMs }))
        .sort((a, b) => b.mtime - a.mtime)
      for (const old of files.slice(MIGRATED_KEPT)) rmSync(old.path, { recursive: true, force: true })
    } catch {
      // Best effort: a cache that cannot be listed is only a cache.
    }
  }
  // A directory build cut short (kill -9) leaves its temporary directory: gone after a day.
  try {
    for (const f of readdirSync(dir).filter((f) => f.startsWith(prefix) && f.endsWith('.tmp'))) {
      const path = join(dir, f)
      if (Date.now() - statSync(path).mtimeMs > 86_400_000) rmSync(path, { recursive: true, force: true })
    }
  } catch {
    // idem
  }
}

/** Whether a whole template directory exists at `path`. */
export function hasTemplateDir(path: string): boolean {
  return existsSync(join(path, TEMPLATE_DIR_MARK)) && existsSync(join(path, 'PG_VERSION'))
}

/**
 * Copies the template directory to `clusterDir` (which must not exist yet, or be empty); false when
 * there is no whole template there. The mark is not copied.
 */
export function copyTemplateDir(path: string, clusterDir: string): boolean {
  if (!hasTemplateDir(path)) return false
  cpSync(path, clusterDir, {
    recursive: true,
    // A copy-on-write clone where the file system offers it (btrfs, XFS, APFS), else a plain copy.
    mode: constants.COPYFILE_FICLONE,
    filter: (source) => source !== join(path, TEMPLATE_DIR_MARK),
  })
  return true
}

/**
 * The migrated template directory used (or built) last, if any: before a new cluster's migration
 * set is known (the application still loading), it is nearly always the one that set names, so the
 * worker copies it aside meanwhile (`stageTemplateDir`, decision 0039).
 */
export function latestTemplateDir(dir = cacheDir()): string | undefined {
  const prefix = `pglite-${pgliteVersion()}-migrated-`
  try {
    return readdirSync(dir)
      .filter((f) => f.startsWith(prefix) && f.endsWith('.cluster'))
      .map((f) => ({ path: join(dir, f), mtime: statSync(join(dir, f)).mtimeMs }))
      .sort((a, b) => b.mtime - a.mtime)
      .find((f) => hasTemplateDir(f.path))?.path
  } catch {
    return undefined
  }
}

/** Marks a template directory as just used: the next guess (`latestTemplateDir`), and the last pruned. */
export function touchTemplateDir(path: string): void {
  try {
    const now = new Date()
    utimesSync(path, now, now)
  } catch {
    // Best effort: only the guess and the pruning order depend on it.
  }
}

/**
 * `copyTemplateDir` to `target` (which must not exist) for a cluster whose migration set is not
 * known yet; false (and nothing left) when the copy failed.
 */
export function stageTemplateDir(path: string, target: string): boolean {
  try {
    return copyTemplateDir(path, target)
  } catch {
    rmSync(target, { recursive: true, force: true })
    return false
  }
}

/** Drops a template directory that failed to open, so the next start rebuilds it. */
export function discardTemplateDir(path: string): void {
  rmSync(path, { recursive: true, force: true })
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

// Beside this file: .ts from source, .js once compiled to dist/.
const dirWorkerUrl = new URL(
  `./template-dir-worker${import.meta.url.endsWith('.ts') ? '.ts' : '.js'}`,
  import.meta.url,
)

/**
 * Builds the template directory `dir` from the template tar `tar` in a short-lived worker thread
 * (PGlite loads the tar into a temporary directory, closes it, and it is renamed into place).
 * `signal` stops it (the temporary directory is removed). Resolves false when it was not built
 * (no tar, a failure, stopped, or another process built it first).
 */
export async function buildTemplateDir(tar: string, dir: string, signal?: AbortSignal): Promise<boolean> {
  if (!existsSync(tar) || hasTemplateDir(dir)) return false
  const tmp = `${dir}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`
  mkdirSync(dirname(dir), { recursive: true })
  const worker = new Worker(dirWorkerUrl, { workerData: { tar, dir: tmp } })
  worker.unref()
  const stop = () => void worker.terminate()
  signal?.addEventListener('abort', stop, { once: true })
  try {
    const built = await new Promise<boolean>((resolve) => {
      let done = false
      worker.on('message', (m: { type?: string }) => {
        if (m?.type === 'built') done = true
      })
      worker.on('error', () => {})
      worker.on('exit', () => resolve(done))
    })
    if (!built || signal?.aborted) return false
    // Fails (ENOTEMPTY) when another process renamed its own first: that one is as good.
    renameSync(tmp, dir)
    return true
  } catch {
    return false
  } finally {
    signal?.removeEventListener('abort', stop)
    rmSync(tmp, { recursive: true, force: true })
  }
}
