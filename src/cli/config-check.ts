import { ConfigError, describeConfig, loadConfig } from '../config/load-config.ts'
import { type CliIo, parseCommandArgs } from './cli-io.ts'

export const configUsage = `Usage: plinth config check [--print]

Validates the configuration (environment, .env and *_FILE secrets) exactly as "plinth start"
does, without starting anything. Exits 0 when valid, 1 with every problem listed otherwise.

Options:
  --print   also print the effective configuration (secrets masked)`

export async function configCommand(args: readonly string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseCommandArgs(args, { print: { type: 'boolean' } }, configUsage, true)
  if (positionals.length !== 1 || positionals[0] !== 'check') {
    const { UsageError } = await import('./cli-io.ts')
    throw new UsageError(
      positionals.length ? `unknown subcommand "${positionals.join(' ')}"` : 'missing subcommand',
      configUsage,
    )
  }
  try {
    const config = loadConfig()
    io.out(`Configuration is valid for ${config.env}.`)
    if (values.print) {
      for (const [key, value] of Object.entries(describeConfig(config)))
        io.out(`  ${key}=${Array.isArray(value) ? value.join(',') : String(value ?? '')}`)
    }
    return 0
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err
    io.err(err.message)
    return 1
  }
}
