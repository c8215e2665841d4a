import { ConfigError, describeConfig, loadConfig } from '../config/load-config.ts'
import { type CliIo, printJson } from './cli-io.ts'
import type { CommandInput } from './cli-spec.ts'

/** `plinth config check [--print] [--json]`. */
export async function configCommand(input: CommandInput, io: CliIo): Promise<number> {
  try {
    const config = loadConfig()
    const described = input.values.print ? describeConfig(config) : undefined
    if (input.json) {
      printJson(io, { valid: true, env: config.env, ...(described ? { config: described } : {}) })
      return 0
    }
    io.out(`Configuration is valid for ${config.env}.`)
    for (const [key, value] of Object.entries(described ?? {}))
      io.out(`  ${key}=${Array.isArray(value) ? value.join(',') : String(value ?? '')}`)
    return 0
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err
    if (input.json) printJson(io, { valid: false, problems: err.problems })
    io.err(err.message)
    return 1
  }
}
