import { type ParseArgsConfig, parseArgs } from 'node:util'

/** Where CLI commands print; tests pass their own. */
export interface CliIo {
  out(text: string): void
  err(text: string): void
}

export const processIo: CliIo = {
  out: (text) => process.stdout.write(`${text}\n`),
  err: (text) => process.stderr.write(`${text}\n`),
}

/** Thrown for wrong arguments: the CLI prints the usage and exits 2. */
export class UsageError extends Error {
  readonly usage: string
  constructor(message: string, usage: string) {
    super(message)
    this.name = 'UsageError'
    this.usage = usage
  }
}

/** `parseArgs` in strict mode, turning its errors into a UsageError with the command's usage. */
export function parseCommandArgs<T extends ParseArgsConfig['options']>(
  args: readonly string[],
  options: T,
  usage: string,
  allowPositionals = false,
) {
  try {
    return parseArgs({ args: [...args], options, strict: true, allowPositionals })
  } catch (err) {
    throw new UsageError((err as Error).message, usage)
  }
}
