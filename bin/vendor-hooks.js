// The start-up vendor bundle (decision 0047): three dependencies that Node would load as ~730 small
// ES modules (typebox 373, kysely 257, @opentelemetry/api 102: 45 % of what a start imports) are
// bundled at `npm install` into a few files by scripts/vendor-bundle.js. This file points the
// process's imports of those packages at the bundle with a synchronous module hook, but only when
// the bundle was built from exactly the package versions installed now; otherwise (no bundle,
// `npm ci --omit=dev`, a package updated without a rebuild, `PLINTH_VENDOR_BUNDLE=off`) nothing is
// hooked and Node loads the packages as usual. Plain JavaScript: bin/plinth.js loads it before any
// TypeScript.
import { readFileSync, realpathSync } from 'node:fs'
// A namespace import: scripts/vendor-bundle.js imports this file under whatever Node runs `npm
// install` (Node 20 has no registerHooks to link against).
import * as nodeModule from 'node:module'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'

/** Bumped when the manifest's shape changes: an older manifest is then ignored, never misread. */
export const VENDOR_FORMAT = 1

/** Where `npm install` writes the bundle: inside node_modules, so it goes and comes with the packages. */
export function vendorDir(root) {
  return join(root, 'node_modules', '.cache', 'plinth', 'vendor')
}

/** The installed version of `name`, read from its package.json under `root`, or undefined. */
export function installedVersion(root, name) {
  try {
    return JSON.parse(readFileSync(join(root, 'node_modules', name, 'package.json'), 'utf8')).version
  } catch {
    return undefined
  }
}

/** The package a specifier names: `@scope/name/sub` → `@scope/name`, `name/sub` → `name`. */
export function packageOf(specifier) {
  return specifier
    .split('/')
    .slice(0, specifier.startsWith('@') ? 2 : 1)
    .join('/')
}

/**
 * Reads the manifest in `dir` and checks it against the packages installed under `root`. Returns
 * `{ entries }` (specifier → `{ url, installed }`: the bundle's file, and the directory URL of the
 * installed package it stands in for) when the bundle can stand in for them, or `{ skipped }`
 * saying why not.
 */
export function readVendorManifest(root, dir = vendorDir(root)) {
  let manifest
  try {
    manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'))
  } catch {
    return { skipped: 'no bundle' }
  }
  if (
    manifest?.format !== VENDOR_FORMAT ||
    typeof manifest.packages !== 'object' ||
    typeof manifest.entries !== 'object'
  )
    return { skipped: 'unknown manifest format' }
  const installed = new Map()
  for (const [name, version] of Object.entries(manifest.packages)) {
    if (installedVersion(root, name) !== version)
      return { skipped: `${name} is not the bundled version ${version}` }
    // Node resolves to real paths: compare with the package's real directory.
    installed.set(name, `${pathToFileURL(realpathSync(join(root, 'node_modules', name))).href}/`)
  }
  const entries = new Map()
  for (const [specifier, file] of Object.entries(manifest.entries)) {
    const at = installed.get(packageOf(specifier))
    if (at === undefined) return { skipped: `${specifier} belongs to no bundled package` }
    entries.set(specifier, { url: pathToFileURL(join(dir, file)).href, installed: at })
  }
  return { entries }
}

/**
 * Hooks this thread's module resolution so that the bundled specifiers load from the bundle.
 * Returns what readVendorManifest returned. `PLINTH_VENDOR_BUNDLE=off` turns it off.
 */
export function useVendorBundle(root, { dir = vendorDir(root), env = process.env } = {}) {
  if (env.PLINTH_VENDOR_BUNDLE === 'off') return { skipped: 'PLINTH_VENDOR_BUNDLE=off' }
  if (typeof nodeModule.registerHooks !== 'function')
    return { skipped: `Node ${process.version} has no module.registerHooks` }
  const found = readVendorManifest(root, dir)
  if (!found.entries) return found
  const { entries } = found
  nodeModule.registerHooks({
    resolve(specifier, context, nextResolve) {
      const entry = entries.get(specifier)
      // Imports only: `require()` loads the package itself, as it did (scripts/vendor-bundle.js).
      if (entry === undefined || !context.conditions?.includes('import'))
        return nextResolve(specifier, context)
      // Only where Node would load the installed copy the bundle was built from: an importer with
      // its own nested copy of the package (another version) keeps it.
      const resolved = nextResolve(specifier, context)
      return resolved.url.startsWith(entry.installed)
        ? { url: entry.url, format: 'module', shortCircuit: true }
        : resolved
    },
  })
  return found
}
