/**
 * The shape of the CLI's one declaration (`commands.ts`) and everything derived from it: argument
 * parsing (Node's `parseArgs`, strict), `--help` for every command and action, shell completion
 * and the CLI reference (README block, docs/cli.md). Nothing here knows a particular command.
 */
import { type ParseArgsConfig, parseArgs } from 'node:util'
import { type CliIo, UsageError } from './cli-io.ts'

export interface OptionDecl {
  readonly name: string
  /** `string` options take a value, named by `arg` in the help (default: boolean flag). */
  readonly type?: 'string' | 'boolean'
  readonly arg?: string
  readonly short?: string
  readonly description: string
  /** The accepted values (checked before the command runs, and completed by the shell). */
  readonly choices?: readonly string[]
  /** Shown without brackets in the synopsis; the command refuses to run without it. */
  readonly required?: boolean
}

export interface ActionDecl {
  readonly name: string
  /** Positional arguments after the action: `<id>` required, `[name]` optional. */
  readonly args?: readonly string[]
  readonly summary: string
  readonly options?: readonly OptionDecl[]
  /** What `--json` prints (the action accepts `--json` when set). */
  readonly json?: string
}

/** What a command gets: its action, the arguments after it and the options, already checked. */
export interface CommandInput {
  readonly action: string | undefined
  readonly args: readonly string[]
  readonly values: Readonly<Record<string, string | boolean | undefined>>
  readonly json: boolean
  readonly verbose: boolean
}

export type CommandHandler = (input: CommandInput, io: CliIo) => Promise<number>

export interface CommandDecl {
  readonly name: string
  readonly summary: string
  /** Paragraphs printed under the usage in `--help`. */
  readonly description?: string
  /** Subcommands (`plinth jobs list`); a command without actions takes `options` and `args`. */
  readonly actions?: readonly ActionDecl[]
  readonly options?: readonly OptionDecl[]
  readonly args?: readonly string[]
  readonly json?: string
  /** Whether the command logs (then it takes `--verbose`). */
  readonly logs?: boolean
  readonly load: () => Promise<CommandHandler>
}

export const JSON_OPTION: OptionDecl = {
  name: 'json',
  description: 'print the result as JSON on standard output (shape below)',
}
export const VERBOSE_OPTION: OptionDecl = {
  name: 'verbose',
  description: 'log at PLINTH_LOG_LEVEL instead of warn (logs go to standard error)',
}
export const HELP_OPTION: OptionDecl = { name: 'help', short: 'h', description: 'print this help' }

export const EXIT_CODES = `Exit codes: 0 done, 1 failed (the reason on standard error), 2 wrong arguments (with the
usage), 130 interrupted.`

/** The options an action (or a command without actions) accepts, global ones included. */
export function optionsOf(command: CommandDecl, action?: ActionDecl): OptionDecl[] {
  const own = action ? (action.options ?? []) : (command.options ?? [])
  const json = action ? action.json : command.json
  return [
    ...own,
    ...(json !== undefined ? [JSON_OPTION] : []),
    ...(command.logs ? [VERBOSE_OPTION] : []),
    HELP_OPTION,
  ]
}

function allOptions(command: CommandDecl): OptionDecl[] {
  const byName = new Map<string, OptionDecl>()
  for (const a of command.actions ?? [undefined]) for (const o of optionsOf(command, a)) byName.set(o.name, o)
  return [...byName.values()]
}

function optionLabel(o: OptionDecl): string {
  const name = `--${o.name}${o.type === 'string' ? ` ${o.arg ?? (o.choices ? o.choices.join('|') : 'VALUE')}` : ''}`
  return o.short ? `-${o.short}, ${name}` : name
}

function synopsis(command: CommandDecl, action?: ActionDecl): string {
  const opts = (action ? action.options : command.options) ?? []
  const optText = opts.map((o) => (o.required ? optionLabel(o) : `[${optionLabel(o)}]`))
  const json = (action ? action.json : command.json) !== undefined ? ['[--json]'] : []
  return [
    'plinth',
    command.name,
    ...(action ? [action.name] : []),
    ...((action ? action.args : command.args) ?? []),
    ...optText,
    ...json,
  ].join(' ')
}

function table(rows: readonly (readonly [string, string])[], indent = '  '): string {
  const width = Math.min(Math.max(...rows.map(([l]) => l.length), 0) + 2, 34)
  return rows
    .map(([left, right]) =>
      left.length + 2 > width
        ? `${indent}${left}\n${indent}${' '.repeat(width)}${right}`
        : `${indent}${left.padEnd(width)}${right}`,
    )
    .join('\n')
}

/** `plinth <command> --help` (or `plinth <command> <action> --help` for one action). */
export function commandHelp(command: CommandDecl, action?: ActionDecl): string {
  const parts: string[] = []
  if (action) {
    parts.push(`Usage: ${synopsis(command, action)}`, '', action.summary)
    parts.push('', 'Options:', table(optionsOf(command, action).map((o) => [optionLabel(o), o.description])))
    if (action.json !== undefined) parts.push('', `--json prints: ${action.json}`)
  } else if (command.actions) {
    parts.push(`Usage: plinth ${command.name} <${command.actions.map((a) => a.name).join(' | ')}> [options]`)
    if (command.description) parts.push('', command.description)
    parts.push(
      '',
      'Actions:',
      table(command.actions.map((a) => [[a.name, ...(a.args ?? [])].join(' '), a.summary])),
    )
    const options = allOptions(command).filter((o) => o !== HELP_OPTION)
    if (options.length > 0) {
      parts.push(
        '',
        'Options:',
        table(
          options.map((o) => {
            const users = (command.actions ?? [])
              .filter((a) => optionsOf(command, a).includes(o))
              .map((a) => a.name)
            const all = users.length === command.actions?.length
            return [optionLabel(o), `${o.description}${all ? '' : ` (${users.join(', ')})`}`]
          }),
        ),
      )
    }
    const shapes = command.actions.filter((a) => a.json !== undefined)
    if (shapes.length > 0)
      parts.push('', 'With --json, standard output holds:', table(shapes.map((a) => [a.name, a.json!])))
    parts.push('', `Run "plinth ${command.name} <action> --help" for one action.`)
  } else {
    parts.push(`Usage: ${synopsis(command)}`)
    if (command.description) parts.push('', command.description)
    else parts.push('', command.summary)
    parts.push('', 'Options:', table(optionsOf(command).map((o) => [optionLabel(o), o.description])))
    if (command.json !== undefined) parts.push('', `--json prints: ${command.json}`)
  }
  parts.push('', EXIT_CODES)
  return parts.join('\n')
}

/** `plinth --help`. */
export function mainHelp(commands: readonly CommandDecl[]): string {
  return `Usage: plinth <command> [options]

Commands:
${table(commands.map((c) => [c.name, c.summary]))}

Run "plinth <command> --help" for a command's actions and options. Results go to standard output
(--json for scripts), logs and errors to standard error. Configuration comes from the environment
(and .env); see docs/configuration.md.

${EXIT_CODES}`
}

/** Parses a command's arguments against its declaration; throws UsageError for anything else. */
export function parseCommand(
  command: CommandDecl,
  argv: readonly string[],
): CommandInput & { help: boolean } {
  const parseOptions: NonNullable<ParseArgsConfig['options']> = {}
  for (const o of allOptions(command))
    parseOptions[o.name] = { type: o.type ?? 'boolean', ...(o.short ? { short: o.short } : {}) }
  let parsed: { values: Record<string, string | boolean | undefined>; positionals: string[] }
  try {
    parsed = parseArgs({
      args: [...argv],
      options: parseOptions,
      strict: true,
      allowPositionals: true,
    }) as typeof parsed
  } catch (err) {
    throw new UsageError((err as Error).message)
  }
  const { values, positionals } = parsed
  let action: ActionDecl | undefined
  let rest = positionals
  if (command.actions) {
    const name = positionals[0]
    action = command.actions.find((a) => a.name === name)
    if (values.help)
      return { action: action?.name, args: [], values, json: false, verbose: false, help: true }
    if (!name) throw new UsageError('missing action')
    if (!action) throw new UsageError(`unknown action "${name}"`)
    rest = positionals.slice(1)
  } else if (values.help) {
    return { action: undefined, args: [], values, json: false, verbose: false, help: true }
  }
  const accepted = new Set(optionsOf(command, action).map((o) => o.name))
  for (const [key, value] of Object.entries(values)) {
    if (value === undefined) continue
    if (!accepted.has(key)) {
      const users = (command.actions ?? []).filter((a) => optionsOf(command, a).some((o) => o.name === key))
      throw new UsageError(
        `--${key} goes with ${users.map((a) => `"${a.name}"`).join(' or ')}, not "${action?.name}"`,
      )
    }
    const decl = allOptions(command).find((o) => o.name === key)
    if (decl?.choices && !decl.choices.includes(String(value)))
      throw new UsageError(`--${key} must be one of ${decl.choices.join(', ')}`)
  }
  const declared = (action ? action.args : command.args) ?? []
  const required = declared.filter((a) => a.startsWith('<')).length
  if (rest.length < required || rest.length > declared.length) {
    // Extra words are not echoed back: one of them may be a secret typed in the wrong place.
    throw new UsageError(
      declared.length === 0
        ? `${action ? `"${action.name}"` : `"${command.name}"`} takes no arguments`
        : `expected ${declared.join(' ')}`,
    )
  }
  return {
    action: action?.name,
    args: rest,
    values,
    json: values.json === true,
    verbose: values.verbose === true,
    help: false,
  }
}

/** The declaration as data for completion and docs: commands, actions, options, choices. */
function words(command: CommandDecl): { actions: string[]; options: string[] } {
  return {
    actions: (command.actions ?? []).map((a) => a.name),
    options: allOptions(command).map((o) => `--${o.name}`),
  }
}

/** A completion script for bash or zsh (`plinth completion bash >> ~/.bashrc`). */
export function completionScript(shell: 'bash' | 'zsh', commands: readonly CommandDecl[]): string {
  const cases = commands
    .map((c) => {
      const w = words(c)
      const choices = allOptions(c)
        .filter((o) => o.choices)
        .map(
          (o) =>
            `        --${o.name}) COMPREPLY=($(compgen -W "${o.choices!.join(' ')}" -- "$cur")); return ;;`,
        )
      return [
        `    ${c.name})`,
        ...(choices.length ? ['      case "$prev" in', ...choices, '      esac'] : []),
        `      if [[ $COMP_CWORD -eq 2 && "$cur" != -* ]]; then COMPREPLY=($(compgen -W "${w.actions.join(' ')}" -- "$cur")); else COMPREPLY=($(compgen -W "${w.options.join(' ')}" -- "$cur")); fi`,
        '      ;;',
      ].join('\n')
    })
    .join('\n')
  const bash = `# plinth completion for bash (generated from the CLI declaration)
_plinth() {
  local cur prev
  cur="\${COMP_WORDS[COMP_CWORD]}"
  prev="\${COMP_WORDS[COMP_CWORD-1]}"
  if [[ $COMP_CWORD -eq 1 ]]; then
    COMPREPLY=($(compgen -W "${commands.map((c) => c.name).join(' ')} --help --version" -- "$cur"))
    return
  fi
  case "\${COMP_WORDS[1]}" in
${cases}
  esac
}
complete -F _plinth plinth`
  if (shell === 'bash') return bash
  return `#compdef plinth
# plinth completion for zsh (generated from the CLI declaration): runs the bash completion
autoload -U +X bashcompinit && bashcompinit
${bash}`
}

const md = (text: string) => text.replaceAll('|', '\\|')

/** The README's CLI block: one line per command and action. */
export function renderCliBlock(commands: readonly CommandDecl[]): string {
  const rows: [string, string][] = []
  for (const c of commands) {
    if (c.actions) for (const a of c.actions) rows.push([synopsis(c, a), a.summary])
    else rows.push([synopsis(c), c.summary])
  }
  return ['```', ...rows.map(([l, r]) => `${l}\n    ${r}`), '```'].join('\n')
}

/** docs/cli.md: every command, action, option, `--json` shape and the exit codes. */
export function renderCliDocs(commands: readonly CommandDecl[]): string {
  const out = [
    '# CLI reference',
    '',
    '<!-- Generated from src/cli/commands.ts by `npm run docs:generate`; do not edit. -->',
    '',
    '`plinth <command> [action] [options]` (`npx plinth` in a checkout, `node src/main.ts` in development).',
    'Results go to standard output, logs and errors to standard error: commands log at `warn` unless',
    '`--verbose`. Every command that prints data takes `--json` and then prints one JSON document',
    '(`audit export` prints NDJSON, one object per line) of the shape given below. A closed standard',
    'output (`| head`) never stops a command: it finishes its work and exits with its own code.',
    '',
    '| Exit code | Meaning |',
    '| --- | --- |',
    '| 0 | done |',
    '| 1 | failed: the reason is on standard error (for an invalid request, each field and why) |',
    '| 2 | wrong arguments: the message and the usage are on standard error |',
    '| 130 | interrupted (SIGINT/SIGTERM during `keys rotate` or a password prompt) |',
    '',
    'Shell completion: `plinth completion bash >> ~/.bashrc`, or for zsh `plinth completion zsh > ~/.zfunc/_plinth` (a directory in `fpath`).',
  ]
  for (const c of commands) {
    out.push('', `## plinth ${c.name}`, '', c.description ?? c.summary)
    for (const a of c.actions ?? [undefined]) {
      const opts = optionsOf(c, a).filter((o) => o !== HELP_OPTION)
      out.push('', `### \`${synopsis(c, a)}\``, '')
      if (a) out.push(a.summary, '')
      if (opts.length > 0) {
        out.push('| Option | Meaning |', '| --- | --- |')
        for (const o of opts) out.push(`| \`${md(optionLabel(o))}\` | ${md(o.description)} |`)
        out.push('')
      }
      const json = a ? a.json : c.json
      if (json !== undefined) out.push(`\`--json\`: ${json}`, '')
      if (out.at(-1) === '') out.pop()
    }
  }
  return `${out.join('\n')}\n`
}

export const README_CLI_BEGIN =
  '<!-- cli:begin (generated from src/cli/commands.ts by npm run docs:generate) -->'
export const README_CLI_END = '<!-- cli:end -->'

/** `readme` with the block between the CLI markers regenerated (unchanged when the markers are missing). */
export function withCliBlock(readme: string, commands: readonly CommandDecl[]): string {
  const begin = readme.indexOf(README_CLI_BEGIN)
  const end = readme.indexOf(README_CLI_END)
  if (begin < 0 || end < begin) return readme
  return `${readme.slice(0, begin + README_CLI_BEGIN.length)}\n${renderCliBlock(commands)}\n${readme.slice(end)}`
}
