import { PLINTH_VERSION } from '../core/version.ts'
import { type CliIo, printJson } from './cli-io.ts'
import type { CommandInput } from './cli-spec.ts'

/** `plinth version [--json]`. */
export async function versionCommand(input: CommandInput, io: CliIo): Promise<number> {
  if (input.json) printJson(io, { version: PLINTH_VERSION, node: process.version })
  else io.out(`plinth ${PLINTH_VERSION} (node ${process.version})`)
  return 0
}
