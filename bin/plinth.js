#!/usr/bin/env node
// Entry of the `plinth` command. Plinth needs Node.js 24+; where an older `node` is first on
// PATH, re-run this script with the Node 24 that `npm install` put in node_modules. (package.json's
// `engines` accepts Node 20 so that installing and `npx plinth` print no warning on such a machine;
// this check is the strict one.)
import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
// A namespace import: Node 20 (re-running below) has no enableCompileCache to link against.
import * as nodeModule from 'node:module'
import { constants } from 'node:os'
import { fileURLToPath } from 'node:url'

/**
 * Set in the re-run's environment: that process's signals may also be relayed by this one, so
 * `plinth start` counts the signals it gets directly and those relayed apart (src/app/lifecycle.ts).
 */
const RELAY_ENV = 'PLINTH_SIGNAL_RELAY'
/** The key of the IPC message that carries a relayed signal's name. */
const RELAY_MESSAGE = 'plinthRelayedSignal'
/** The process event a relayed SIGINT or SIGTERM becomes in the re-run (RELAYED_SIGNAL_EVENT there). */
const RELAYED_EVENT = 'plinth:relayed-signal'
const RELAYED = ['SIGINT', 'SIGTERM', 'SIGHUP']

const major = Number(process.versions.node.split('.')[0])
if (major < 24) {
  const local = fileURLToPath(new URL('../node_modules/node/bin/node', import.meta.url))
  if (!existsSync(local)) {
    process.stderr.write(
      `plinth needs Node.js 24 or newer (this is ${process.version}); run "npm install" first.\n`,
    )
    process.exit(1)
  }
  // The IPC channel is a lifeline: the command stops when this process ends, however it ends.
  const child = spawn(local, [fileURLToPath(import.meta.url), ...process.argv.slice(2)], {
    stdio: ['inherit', 'inherit', 'inherit', 'ipc'],
    env: { ...process.env, [RELAY_ENV]: '1' },
  })
  // A signal sent to this process alone (a supervisor's SIGTERM) reaches the command too; one sent
  // to the terminal's process group (Ctrl-C) reaches both. SIGINT and SIGTERM go over the channel,
  // marked as relayed, so that `plinth start` counts a copy of a signal it also got directly as one
  // signal, however late it arrives (src/app/lifecycle.ts); SIGHUP, or any signal once the channel
  // is gone, is sent as a signal.
  for (const signal of RELAYED)
    process.on(signal, () => {
      if (signal === 'SIGHUP' || !child.connected) child.kill(signal)
      else child.send({ [RELAY_MESSAGE]: signal }, (err) => err && child.kill(signal))
    })
  child.on('error', (err) => {
    process.stderr.write(`plinth: could not run ${local}: ${err.message}\n`)
    process.exit(1)
  })
  // This process ends as the command did: its exit code, or 128 + the signal that ended it.
  child.on('exit', (code, signal) => process.exit(code ?? 128 + (constants.signals[signal] ?? 0)))
} else {
  // Re-run by an older Node (above): the channel's far end closes when that process ends, a kill -9
  // included, which no signal relays. The command then stops as if it had been sent SIGTERM (the
  // server gracefully) instead of living on without the process its supervisor watches. Unref'd,
  // so that the channel alone keeps nothing running.
  if (process.env[RELAY_ENV] === '1' && process.channel) {
    process.channel.unref()
    process.once('disconnect', () => process.kill(process.pid, 'SIGTERM'))
    // A signal relayed by that process: `plinth start` counts it beside those it gets directly
    // (RELAYED_EVENT, src/app/lifecycle.ts); any other command gets the signal itself, as before.
    process.on('message', (message) => {
      const signal = message?.[RELAY_MESSAGE]
      if (signal !== 'SIGINT' && signal !== 'SIGTERM') return
      if (!process.emit(RELAYED_EVENT, signal)) process.kill(process.pid, signal)
    })
  }
  // Compiled (and type-stripped) modules cached on disk: see src/main.ts. Unlike `node src/main.ts`,
  // this entry is JavaScript, so not even the first file needs Node's TypeScript stripper (~25 ms to
  // load at every start). Worker threads and child processes use the cache only when
  // NODE_COMPILE_CACHE is in their environment at their start, as src/main.ts sets it.
  const cache = nodeModule.enableCompileCache()
  if (cache?.directory && cache.status !== nodeModule.constants.compileCacheStatus.FAILED)
    process.env.NODE_COMPILE_CACHE ??= cache.directory
  // Three dependencies' ~730 modules from a bundle built at `npm install`, when it matches what is
  // installed (bin/vendor-hooks.js, decision 0047). Imported only here: Node 20 has no registerHooks.
  await import('./vendor-register.js')
  const source = new URL('../src/main.ts', import.meta.url)
  const entry = existsSync(fileURLToPath(source)) ? source : new URL('../dist/main.js', import.meta.url)
  const { runCli } = await import(entry.href)
  process.exit(await runCli(process.argv.slice(2)))
}
