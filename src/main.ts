import { type CliIo, processIo, UsageError } from './cli/cli-io.ts'
import { ConfigError } from './config/load-config.ts'
import { isPlinthError } from './shared/errors.ts'

const commands: Record<
  string,
  {
    summary: string
    load: () => Promise<(args: readonly string[], io: CliIo) => Promise<number>>
    usage: () => Promise<string>
  }
> = {
  start: {
    summary: 'start the server (and workers)',
    load: async () => (await import('./cli/start.ts')).startCommand,
    usage: async () => (await import('./cli/start.ts')).startUsage,
  },
  migrate: {
    summary: 'apply, revert or list database migrations',
    load: async () => (await import('./cli/migrate.ts')).migrateCommand,
    usage: async () => (await import('./cli/migrate.ts')).migrateUsage,
  },
  audit: {
    summary: 'verify the audit log hash chain, export it as NDJSON, or prune it',
    load: async () => (await import('./cli/audit.ts')).auditCommand,
    usage: async () => (await import('./cli/audit.ts')).auditUsage,
  },
  retention: {
    summary: 'delete expired sessions, tokens, e-mail and audit rows now, or list the rules',
    load: async () => (await import('./cli/retention.ts')).retentionCommand,
    usage: async () => (await import('./cli/retention.ts')).retentionUsage,
  },
  privacy: {
    summary: 'export or erase everything Plinth holds about a user',
    load: async () => (await import('./cli/privacy.ts')).privacyCommand,
    usage: async () => (await import('./cli/privacy.ts')).privacyUsage,
  },
  backup: {
    summary: 'create, list, show, verify or restore encrypted backups',
    load: async () => (await import('./cli/backup.ts')).backupCommand,
    usage: async () => (await import('./cli/backup.ts')).backupUsage,
  },
  user: {
    summary: 'create a user (plinth user create --email <address> [--admin])',
    load: async () => (await import('./cli/user-create.ts')).userCommand,
    usage: async () => (await import('./cli/user-create.ts')).userUsage,
  },
  jobs: {
    summary: 'list, show, enqueue, retry or cancel jobs',
    load: async () => (await import('./cli/jobs.ts')).jobsCommand,
    usage: async () => (await import('./cli/jobs.ts')).jobsUsage,
  },
  schedules: {
    summary: 'list, create, update, pause, resume or delete cron schedules',
    load: async () => (await import('./cli/jobs.ts')).schedulesCommand,
    usage: async () => (await import('./cli/jobs.ts')).schedulesUsage,
  },
  keys: {
    summary: 'rotate the data keys, or show which key encrypts how many values',
    load: async () => (await import('./cli/keys.ts')).keysCommand,
    usage: async () => (await import('./cli/keys.ts')).keysUsage,
  },
  config: {
    summary: 'validate the configuration without starting',
    load: async () => (await import('./cli/config-check.ts')).configCommand,
    usage: async () => (await import('./cli/config-check.ts')).configUsage,
  },
  version: {
    summary: 'print the version',
    load: async () => (await import('./cli/version.ts')).versionCommand,
    usage: async () => (await import('./cli/version.ts')).versionUsage,
  },
}

export const mainUsage = `Usage: plinth <command> [options]

Commands:
${Object.entries(commands)
  .map(([name, c]) => `  ${name.padEnd(10)}${c.summary}`)
  .join('\n')}

Run "plinth <command> --help" for a command's options. Configuration comes from the environment
(and .env); see docs/configuration.md.`

/** Runs the CLI and returns the exit code: 0 done, 1 failed, 2 wrong arguments. */
export async function runCli(argv: readonly string[], io: CliIo = processIo): Promise<number> {
  const [name, ...args] = argv
  if (name === undefined || name === 'help' || name === '--help' || name === '-h') {
    io.out(mainUsage)
    return name === undefined ? 2 : 0
  }
  if (name === '--version' || name === '-v') return runCli(['version'], io)
  const command = Object.hasOwn(commands, name) ? commands[name] : undefined
  if (!command) {
    io.err(`plinth: unknown command "${name}"\n\n${mainUsage}`)
    return 2
  }
  if (args.includes('--help') || args.includes('-h')) {
    io.out(await command.usage())
    return 0
  }
  try {
    return await (await command.load())(args, io)
  } catch (err) {
    if (err instanceof UsageError) {
      io.err(`plinth ${name}: ${err.message}\n\n${err.usage}`)
      return 2
    }
    if (err instanceof ConfigError) {
      io.err(err.message)
      return 1
    }
    if (isPlinthError(err)) {
      io.err(`plinth ${name}: ${err.message} [${err.code}]`)
      return 1
    }
    io.err(`plinth ${name}: ${(err as Error).stack ?? String(err)}`)
    return 1
  }
}

if (import.meta.main) {
  process.exit(await runCli(process.argv.slice(2)))
}
