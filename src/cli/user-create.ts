import { createInterface } from 'node:readline'
import { Writable } from 'node:stream'
import type { Role } from '../core/permissions.ts'
import { createUserDirect } from '../modules/accounts/bootstrap-admin.ts'
import { assertPasswordPolicy } from '../modules/accounts/passwords.ts'
import { type CliIo, printJson, UsageError } from './cli-io.ts'
import { withCliPlinth } from './cli-plinth.ts'
import type { CommandInput } from './cli-spec.ts'

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

/** `plinth user create --email <address> [--role <role> | --admin]`, the password on standard input. */
export async function userCommand(
  input: CommandInput,
  io: CliIo,
  source: PasswordSource = { input: process.stdin, prompt: process.stderr },
): Promise<number> {
  const values = input.values as { email?: string; role?: string; admin?: boolean }
  const email = values.email?.trim()
  if (!email || !/^[^\s@]+@[^\s@]+$/.test(email)) throw new UsageError('--email needs an e-mail address')
  if (values.admin && values.role !== undefined && values.role !== 'admin')
    throw new UsageError('--admin and --role disagree; give one of them')
  const role = (values.admin ? 'admin' : (values.role ?? 'member')) as Role

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

  // Applies pending migrations (PLINTH_MIGRATE_ON_START), so a fresh install can start here.
  return withCliPlinth({ verbose: input.verbose, migrate: true }, async (plinth) => {
    const id = await createUserDirect(plinth.context, { email, password, role })
    if (input.json) printJson(io, { id, email, role })
    else io.out(`created user ${id} (${email}, ${role})`)
    return 0
  })
}
