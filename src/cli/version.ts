import { PLINTH_VERSION } from '../core/version.ts'
import { type CliIo, parseCommandArgs } from './cli-io.ts'

export const versionUsage = `Usage: plinth version

Prints Plinth's version and the Node.js version it runs on.`

export async function versionCommand(args: readonly string[], io: CliIo): Promise<number> {
  parseCommandArgs(args, {}, versionUsage)
  io.out(`plinth ${PLINTH_VERSION} (node ${process.version})`)
  return 0
}
