import { Writable } from 'node:stream'
import type { Logger } from 'pino'
import type { PlinthConfig } from '../config/config.schema.ts'
import { createLogger, prettyStream } from '../observability/logger.ts'

/** Where CLI commands print; tests pass their own. Results go to `out`, everything else to `err`. */
export interface CliIo {
  out(text: string): void
  err(text: string): void
}

/**
 * A standard stream that never stops the process: once its reader is gone (EPIPE, `| head`), or
 * any other write error, further writes are dropped instead of throwing or being retried. The
 * command still finishes its work and exits with its own code.
 */
function safeWriter(stream: NodeJS.WriteStream): (text: string) => void {
  let open = true
  stream.on('error', () => {
    open = false
  })
  return (text) => {
    if (!open || stream.destroyed) return
    try {
      stream.write(text)
    } catch {
      open = false
    }
  }
}

const writeOut = safeWriter(process.stdout)
const writeErr = safeWriter(process.stderr)

export const processIo: CliIo = {
  out: (text) => writeOut(`${text}\n`),
  err: (text) => writeErr(`${text}\n`),
}

/** Thrown for wrong arguments: the CLI prints the message and the command's usage, and exits 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'UsageError'
  }
}

/** A failure the command explains itself: the CLI prints the message (no stack) and exits 1. */
export class CommandFailure extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'CommandFailure'
  }
}

const LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const

/**
 * The logger of a command: to standard error (standard output holds only results), at `warn`
 * unless `--verbose` (then at PLINTH_LOG_LEVEL), never more talkative than PLINTH_LOG_LEVEL.
 * Pretty in development like the server's, JSON otherwise; a closed standard error loses the lines,
 * never the command.
 */
export function cliLogger(
  config: Pick<PlinthConfig, 'logLevel' | 'logFormat' | 'env'>,
  options: { verbose?: boolean | undefined } = {},
): Logger {
  const configured = LEVELS.indexOf(config.logLevel as (typeof LEVELS)[number])
  const level = options.verbose || configured > LEVELS.indexOf('warn') ? config.logLevel : 'warn'
  const sink = new Writable({
    write(chunk, _encoding, done) {
      writeErr(String(chunk))
      done()
    },
  })
  const destination = (config.logFormat === 'pretty' ? prettyStream(sink) : undefined) ?? {
    write: (line: string) => writeErr(line),
  }
  return createLogger({ ...config, logLevel: level }, destination)
}

/** Prints a value as JSON (two-space indented, one document) for `--json`. */
export function printJson(io: CliIo, value: unknown): void {
  io.out(JSON.stringify(value, null, 2))
}
