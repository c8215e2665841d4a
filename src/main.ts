import { constants, enableCompileCache } from 'node:module'
import type { CliIo } from './cli/cli-io.ts'

/**
 * Runs the CLI and returns the exit code: 0 done, 1 failed, 2 wrong arguments (130 interrupted).
 * Commands are declared once in cli/commands.ts; results go to `io.out` (standard output by
 * default), everything else to `io.err`. The CLI itself is in cli/run-cli.ts, imported here at
 * the first call, so that the entry below enables the compile cache before any of it loads.
 */
export async function runCli(argv: readonly string[], io?: CliIo): Promise<number> {
  const cli = await import('./cli/run-cli.ts')
  return io ? cli.runCli(argv, io) : cli.runCli(argv)
}

if (import.meta.main) {
  // Node's on-disk cache of compiled modules, TypeScript stripping included: a start after the first
  // loads the ~250 modules of a command (imported lazily, below) about 3-4x faster (decision 0017).
  // Enabled before anything else is loaded: this file imports nothing else statically (decision 0039).
  // NODE_COMPILE_CACHE sets its directory (default: the OS temp dir); NODE_DISABLE_COMPILE_CACHE=1 turns it off.
  const cache = enableCompileCache()
  // Worker threads (the embedded database's: PGlite and the socket server, ~0.5 s to compile) and
  // child processes only use it when NODE_COMPILE_CACHE is in their environment at their start.
  if (cache.directory && cache.status !== constants.compileCacheStatus.FAILED)
    process.env.NODE_COMPILE_CACHE ??= cache.directory
  // The start-up vendor bundle, as bin/plinth.js uses it (this entry is the image's `node
  // dist/main.js`): imports of three dependencies from a few files instead of ~730 (decision 0047).
  // Outside src/ (plain JavaScript, loaded before any TypeScript), hence a URL, not an import path.
  await import(new URL('../bin/vendor-register.js', import.meta.url).href)
  const code = await runCli(process.argv.slice(2))
  // Whatever a command left behind (sockets, timers, a closed stdout): its work is done.
  process.exit(code)
}
