// Builds the start-up vendor bundle (decision 0047; bin/vendor-hooks.js uses it): every exported
// entry of the packages in VENDORED, bundled with esbuild into shared chunks, so that a start loads
// a few files instead of ~730 modules, plus a manifest naming the versions it was built from.
// `npm install` runs it (the `prepare` script). It never fails an install: without esbuild
// (`npm ci --omit=dev`) or on any error it says so and exits 0, and Plinth then starts without it.
// Plain JavaScript, so that any Node that runs npm can run it (Node 20 included: a production
// `npm ci --omit=dev` on the machine's own Node runs it too).
//
//   node scripts/vendor-bundle.js [--out DIR]
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { builtinModules } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { installedVersion, VENDOR_FORMAT, vendorDir } from '../bin/vendor-hooks.js'

/**
 * The packages bundled. Each is made of many modules, has no dependencies (an import the bundle
 * would leave to node_modules could find another copy from the bundle's directory than from the
 * package's), never finds files relative to itself, and offers ES modules to `import` (Node loads
 * those, so the bundle has the same exports and evaluation order). `require()` still loads the
 * package itself: @opentelemetry/api has a CommonJS build for it, the others are ESM only.
 */
export const VENDORED = ['typebox', 'kysely', '@opentelemetry/api']

const ROOT = fileURLToPath(new URL('..', import.meta.url))

/** `typebox/compile` → `typebox__compile`: the output name of an entry. */
const outName = (specifier) => specifier.replaceAll('/', '__').replaceAll('@', '')

/** Every importable specifier of `name`: its `exports` keys without wildcards or JSON files. */
export function entriesOf(root, name) {
  const pkg = JSON.parse(readFileSync(join(root, 'node_modules', name, 'package.json'), 'utf8'))
  const keys = typeof pkg.exports === 'object' && pkg.exports !== null ? Object.keys(pkg.exports) : ['.']
  const subpaths = keys.every((key) => key.startsWith('.')) ? keys : ['.']
  return subpaths
    .filter((key) => !key.includes('*') && !key.endsWith('.json'))
    .map((key) => (key === '.' ? name : `${name}/${key.slice(2)}`))
}

/**
 * Builds the bundle of `packages` into `outDir` (built in a temporary sibling and swapped in whole,
 * so a reader never sees half a bundle). Returns the manifest written.
 */
export async function buildVendorBundle({ root = ROOT, outDir = vendorDir(root), packages = VENDORED } = {}) {
  const esbuild = await import('esbuild')
  const versions = {}
  const entries = {}
  for (const name of packages) {
    const version = installedVersion(root, name)
    if (version === undefined) throw new Error(`${name} is not installed`)
    versions[name] = version
    for (const specifier of entriesOf(root, name)) entries[specifier] = `${outName(specifier)}.mjs`
  }
  const owned = (path) => packages.some((name) => path === name || path.startsWith(`${name}/`))
  const staging = `${outDir}.building-${process.pid}`
  rmSync(staging, { recursive: true, force: true })
  try {
    await esbuild.build({
      absWorkingDir: root,
      entryPoints: Object.keys(entries).map((specifier) => ({ in: specifier, out: outName(specifier) })),
      bundle: true,
      splitting: true,
      format: 'esm',
      platform: 'node',
      target: 'node24',
      // Node's own resolution: the `import`/`node`/`default` conditions, no `module`, `main` only.
      conditions: [],
      mainFields: ['main'],
      outdir: staging,
      outExtension: { '.js': '.mjs' },
      chunkNames: 'chunk-[hash]',
      legalComments: 'inline',
      // Failures are reported once, by the caller; a warning would only repeat what the tests check.
      logLevel: 'silent',
      plugins: [
        {
          // Only the packages' own modules and Node's built-ins: any other import breaks the rule
          // above, so the build fails and Plinth starts without a bundle.
          name: 'only-vendored',
          setup(build) {
            build.onResolve({ filter: /^[^./]/ }, (args) => {
              if (args.kind === 'entry-point' || owned(args.path)) return undefined
              if (args.path.startsWith('node:') || builtinModules.includes(args.path))
                return { external: true }
              return { errors: [{ text: `${args.importer} imports ${args.path}, which is not bundled` }] }
            })
          },
        },
      ],
    })
  } catch (err) {
    rmSync(staging, { recursive: true, force: true })
    throw err
  }
  const manifest = { format: VENDOR_FORMAT, packages: versions, entries }
  writeFileSync(join(staging, 'manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`)
  mkdirSync(dirname(outDir), { recursive: true })
  // Two renames, then the removal: a process starting meanwhile finds the old bundle whole, or for
  // an instant none (it then loads the packages themselves), never one half removed.
  const previous = `${outDir}.previous-${process.pid}`
  let replaced = true
  try {
    renameSync(outDir, previous)
  } catch (err) {
    if (err?.code !== 'ENOENT') throw err
    replaced = false
  }
  renameSync(staging, outDir)
  if (replaced) rmSync(previous, { recursive: true, force: true })
  return manifest
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const at = process.argv.indexOf('--out')
  const outDir = at > 0 ? process.argv[at + 1] : undefined
  try {
    await import('esbuild')
  } catch {
    console.log(
      'vendor bundle: esbuild is not installed (production install?): Plinth starts without the bundle',
    )
    process.exit(0)
  }
  try {
    const started = performance.now()
    const manifest = await buildVendorBundle(outDir ? { outDir } : {})
    const names = Object.entries(manifest.packages).map(([name, version]) => `${name}@${version}`)
    console.log(`vendor bundle: ${names.join(', ')} in ${Math.round(performance.now() - started)} ms`)
  } catch (err) {
    // esbuild's own message lists every failed output; its first error says why.
    const why = err?.errors?.[0]?.text ?? err?.message ?? String(err)
    console.warn(`vendor bundle: not built (${why}); Plinth starts without it`)
  }
}
