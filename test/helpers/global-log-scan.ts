/**
 * Global setup of `npm test` (`node --test --test-global-setup=test/helpers/global-log-scan.ts`):
 * proves that the logs of the whole run never hold a password, token, TOTP secret or master key.
 *
 * `globalSetup` creates a run directory under the system temporary directory and names it in
 * `PLINTH_TEST_LOG_DIR`, which the test processes inherit (test/helpers/run-logs.ts). After the last
 * test file, `globalTeardown` scans it (test/helpers/log-scan.ts): on a leak it prints each
 * file:line and kind (never the secret), keeps the directory for inspection and fails the run;
 * otherwise it removes the directory. An existing `PLINTH_TEST_LOG_DIR` is used and kept.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { formatLeaks, LOG_DIR_ENV, scanLogs } from './log-scan.ts'

let dir: string | undefined
let ownDir = false
let scanned = false

export function globalSetup(): void {
  dir = process.env[LOG_DIR_ENV]
  if (!dir) {
    dir = mkdtempSync(join(tmpdir(), 'plinth-test-logs-'))
    ownDir = true
    process.env[LOG_DIR_ENV] = dir
  }
}

export function globalTeardown(): void {
  if (!dir || scanned) return
  scanned = true
  const result = scanLogs(dir)
  if (result.leaks.length > 0) {
    process.stderr.write(`\n${formatLeaks(result, dir)}\nThe captured logs are kept in ${dir}.\n`)
    // Not a throw: node --test would print no message for it. The exit code fails the run.
    process.exitCode = 1
    return
  }
  process.stderr.write(
    `log scan: no secret in ${result.lines} log lines (${result.files} files, ${result.secrets} known secrets)\n`,
  )
  if (ownDir) rmSync(dir, { recursive: true, force: true })
}
