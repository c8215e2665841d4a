#!/usr/bin/env node
// Entry of the `plinth` command. Plinth needs Node.js 24+; where an older `node` is first on
// PATH, re-run this script with the Node 24 that `npm install` put in node_modules. (package.json's
// `engines` accepts Node 20 so that installing and `npx plinth` print no warning on such a machine;
// this check is the strict one.)
import { spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
// A namespace import: Node 20 (re-running below) has no enableCompileCache to link against.
import * as nodeModule from 'node:module'
import { fileURLToPath } from 'node:url'

const major = Number(process.versions.node.split('.')[0])
if (major < 24) {
  const local = fileURLToPath(new URL('../node_modules/node/bin/node', import.meta.url))
  if (!existsSync(local)) {
    process.stderr.write(
      `plinth needs Node.js 24 or newer (this is ${process.version}); run "npm install" first.\n`,
    )
    process.exit(1)
  }
  const result = spawnSync(local, [fileURLToPath(import.meta.url), ...process.argv.slice(2)], {
    stdio: 'inherit',
  })
  process.exit(result.status ?? 1)
}
// Compiled (and type-stripped) modules cached on disk: see src/main.ts. Unlike `node src/main.ts`,
// this entry is JavaScript, so not even the first file needs Node's TypeScript stripper (~25 ms to
// load at every start). Worker threads and child processes use the cache only when
// NODE_COMPILE_CACHE is in their environment at their start, as src/main.ts sets it.
const cache = nodeModule.enableCompileCache()
if (cache?.directory && cache.status !== nodeModule.constants.compileCacheStatus.FAILED)
  process.env.NODE_COMPILE_CACHE ??= cache.directory
// Two dependencies' ~630 modules from a bundle built at `npm install`, when it matches what is
// installed (bin/vendor-hooks.js, decision 0047). Imported only here: Node 20 has no registerHooks.
await import('./vendor-register.js')
const source = new URL('../src/main.ts', import.meta.url)
const entry = existsSync(fileURLToPath(source)) ? source : new URL('../dist/main.js', import.meta.url)
const { runCli } = await import(entry.href)
process.exit(await runCli(process.argv.slice(2)))
