/**
 * The `plinth` command itself (src/main.ts is its entry): looks the command up in commands.ts,
 * checks its arguments, runs its handler and maps what it throws to an exit code.
 */
import { ConfigError } from '../config/load-config.ts'
import { isPlinthError } from '../shared/errors.ts'
import { type CliIo, CommandFailure, processIo, UsageError } from './cli-io.ts'
import { commandHelp, mainHelp, parseCommand } from './cli-spec.ts'
import { commands } from './commands.ts'

export const mainUsage = mainHelp(commands)

/** `--password`, `--pass=…`, `-p`: refused before parsing, whatever follows (and never echoed back). */
const PASSWORD_FLAG = /^--?(p|pass|passwd|password|pw)(=|$)/i

/**
 * Runs the CLI and returns the exit code: 0 done, 1 failed, 2 wrong arguments (130 interrupted).
 * Commands are declared once in cli/commands.ts; results go to `io.out`, everything else to `io.err`.
 */
export async function runCli(argv: readonly string[], io: CliIo = processIo): Promise<number> {
  const [name, ...args] = argv
  if (name === undefined || name === 'help' || name === '--help' || name === '-h') {
    if (name === undefined) io.err(mainUsage)
    else io.out(mainUsage)
    return name === undefined ? 2 : 0
  }
  if (name === '--version' || name === '-v') return runCli(['version', ...args], io)
  const command = commands.find((c) => c.name === name)
  if (!command) {
    io.err(`plinth: unknown command "${name}"\n\n${mainUsage}`)
    return 2
  }
  const usageOf = (action?: string) =>
    commandHelp(
      command,
      command.actions?.find((a) => a.name === action),
    )
  const named = args.find((a) => !a.startsWith('-'))
  if (args.some((a) => PASSWORD_FLAG.test(a))) {
    io.err(
      `plinth ${name}: a password is never taken from the command line (the process list and shell history would show it): type it at the prompt, or pipe it on standard input\n\n${usageOf(named)}`,
    )
    return 2
  }
  let input: ReturnType<typeof parseCommand>
  try {
    input = parseCommand(command, args)
  } catch (err) {
    if (!(err instanceof UsageError)) throw err
    io.err(`plinth ${name}: ${err.message}\n\n${usageOf(named)}`)
    return 2
  }
  if (input.help) {
    io.out(usageOf(input.action))
    return 0
  }
  try {
    return await (await command.load())(input, io)
  } catch (err) {
    if (err instanceof UsageError) {
      io.err(`plinth ${name}: ${err.message}\n\n${usageOf(input.action)}`)
      return 2
    }
    if (err instanceof CommandFailure) {
      io.err(`plinth ${name}: ${err.message}`)
      return 1
    }
    if (err instanceof ConfigError) {
      io.err(err.message)
      return 1
    }
    if (isPlinthError(err)) {
      const fields = (err.errors ?? []).map(
        (e) =>
          `  - ${e.field || '(the whole value)'}${e.in && e.in !== 'body' ? ` (${e.in})` : ''}: ${e.message}`,
      )
      io.err(
        `plinth ${name}: ${err.message} [${err.code}]${fields.length > 0 ? `\n${fields.join('\n')}` : ''}`,
      )
      return 1
    }
    io.err(`plinth ${name}: ${(err as Error).stack ?? String(err)}`)
    return 1
  }
}
