import { createInterface } from 'node:readline'
import { Writable } from 'node:stream'
import { createPlinth } from '../app/create-plinth.ts'
import { loadConfig } from '../config/load-config.ts'
import { ROLES, type Role } from '../core/permissions.ts'
import { createUserDirect } from '../modules/accounts/bootstrap-admin.ts'
import { assertPasswordPolicy } from '../modules/accounts/passwords.ts'
import { createLogger } from '../observability/logger.ts'
import { type CliIo, parseCommandArgs, UsageError } from './cli-io.ts'

export const userUsage = `Usage: plinth user create --email <address> [--role <role> | --admin]

Creates a user with a password directly in the database (for the first administrator, or when
sign-up is closed). The password is read from standard input: typed twice at a hidden prompt on a
terminal, otherwise the first line (\`plinth user create --admin --email a@example.com < pw.txt\`).
It is never taken from the command line, where the process list and shell history would show it.

Options:
  --email <address>   the user's e-mail address (required)
  --role <role>       ${ROLES.join(', ')} (default member)
  --admin             shorthand for --role admin`

/** `--password`, `--pass=…`, `-p`: refused, whatever follows (and never echoed back). */
const PASSWORD_FLAG = /^--?(p|pass|passwd|password|pw)(=|$)/i

/** Where the password comes from: a terminal (hidden prompt) or a pipe/file (first line). */
export interface PasswordSource {
  readonly input: NodeJS.ReadableStream & { isTTY?: boolean }
  /** Prompts go here (stderr), never the typed characters. */
  readonly prompt: NodeJS.WritableStream
}

class Interrupted extends Error {}

/** The first line of a non-terminal input, without its line ending; '' when the input is empty. */
function firstLine(input: NodeJS.ReadableStream): Promise<string> {
  return new Promise((resolve) => {
    const rl = createInterface({ input, terminal: false, crlfDelay: Number.POSITIVE_INFINITY })
    let line: string | undefined
    rl.once('line', (l) => {
      line = l
      rl.close()
    })
    rl.once('close', () => resolve(line ?? ''))
  })
}

/** Asks at a prompt without echoing what is typed (readline writes nothing while muted). */
function hiddenQuestion(source: PasswordSource, question: string): Promise<string> {
  let muted = false
  const output = new Writable({
    write(chunk, encoding, done) {
      if (!muted) source.prompt.write(chunk, encoding)
      done()
    },
  })
  const rl = createInterface({ input: source.input, output, terminal: true })
  return new Promise((resolve, reject) => {
    rl.once('SIGINT', () => {
      rl.close()
      source.prompt.write('\n')
      reject(new Interrupted())
    })
    rl.question(question, (answer) => {
      rl.close()
      source.prompt.write('\n')
      resolve(answer)
    })
    muted = true
  })
}

/** Reads the password: hidden prompt (typed twice) on a terminal, otherwise the first input line. */
export async function readPassword(source: PasswordSource): Promise<string> {
  if (!source.input.isTTY) return firstLine(source.input)
  const password = await hiddenQuestion(source, 'Password: ')
  const again = await hiddenQuestion(source, 'Repeat the password: ')
  if (password !== again) throw new Error('the two passwords differ; nothing was created')
  return password
}

export async function userCommand(
  args: readonly string[],
  io: CliIo,
  source: PasswordSource = { input: process.stdin, prompt: process.stderr },
): Promise<number> {
  if (args.some((a) => PASSWORD_FLAG.test(a))) {
    throw new UsageError(
      'the password is never taken from the command line (the process list and shell history would show it): type it at the prompt, or pipe it on standard input',
      userUsage,
    )
  }
  const { values, positionals } = parseCommandArgs(
    args,
    { email: { type: 'string' }, role: { type: 'string' }, admin: { type: 'boolean' } },
    userUsage,
    true,
  )
  // Extra words are not repeated back: one of them may be a password typed in the wrong place.
  if (positionals[0] !== 'create' || positionals.length > 1) {
    throw new UsageError(
      positionals.length === 0 ? 'missing subcommand' : 'expected exactly "create"',
      userUsage,
    )
  }
  const email = values.email?.trim()
  if (!email || !/^[^\s@]+@[^\s@]+$/.test(email))
    throw new UsageError('--email needs an e-mail address', userUsage)
  if (values.admin && values.role !== undefined && values.role !== 'admin')
    throw new UsageError('--admin and --role disagree; give one of them', userUsage)
  const role = (values.admin ? 'admin' : (values.role ?? 'member')) as Role
  if (!(ROLES as readonly string[]).includes(role))
    throw new UsageError(`--role must be one of ${ROLES.join(', ')}`, userUsage)

  let password: string
  try {
    password = await readPassword(source)
  } catch (err) {
    if (err instanceof Interrupted) return 130
    io.err(`plinth user: ${(err as Error).message}`)
    return 1
  }
  if (password === '') {
    io.err('plinth user: no password given: type it at the prompt, or pipe it on standard input')
    return 1
  }
  // Before touching the database: a weak password costs nothing to refuse.
  assertPasswordPolicy(password, { email })

  // No drain delay: nothing routes traffic to a CLI process.
  const config = Object.freeze({ ...loadConfig(), shutdownDelay: 0 })
  const logger = createLogger(config)
  const plinth = await createPlinth({ config, logger, attachToRunning: true })
  try {
    await plinth.prepare()
    const pending = await plinth.migrator.pendingCount()
    if (pending > 0) {
      io.err(
        `plinth user: ${pending} migration(s) pending (PLINTH_MIGRATE_ON_START=false): run "plinth migrate up" first`,
      )
      return 1
    }
    const id = await createUserDirect(plinth.context, { email, password, role })
    io.out(`created user ${id} (${email}, ${role})`)
    return 0
  } finally {
    await plinth.shutdown()
    logger.flush()
  }
}
