import { matchesGlob } from 'node:path'

// A tiny Dockerfile reader for tests that check deploy files without a Docker engine: enough for
// stages, flags, exec forms and key=value pairs, not the whole grammar (no heredocs, no escape
// directive).

export interface Instruction {
  /** Upper-cased, e.g. `COPY`. */
  keyword: string
  /** Everything after the keyword, continuations joined. */
  args: string
}

export interface Stage {
  /** The `AS` name, if any. */
  name: string | undefined
  image: string
  instructions: Instruction[]
}

/** Instructions (continuations joined, comments dropped), grouped into stages by FROM. */
export function parseDockerfile(text: string): Stage[] {
  const stages: Stage[] = []
  let pending = ''
  for (const raw of text.split('\n')) {
    if (/^\s*#/.test(raw) || (pending === '' && raw.trim() === '')) continue
    if (raw.trimEnd().endsWith('\\')) {
      pending += `${raw.trimEnd().slice(0, -1)} `
      continue
    }
    const [, keyword = '', args = ''] = /^\s*(\S+)\s*(.*)$/s.exec(pending + raw) ?? []
    pending = ''
    if (keyword.toUpperCase() === 'FROM') {
      const [image = '', as, name] = splitFlags(args).rest.split(/\s+/)
      if (as !== undefined && as.toUpperCase() !== 'AS') throw new Error(`cannot read FROM ${args}`)
      stages.push({ name, image, instructions: [] })
    } else {
      const stage = stages.at(-1)
      if (!stage) throw new Error(`${keyword} before the first FROM`)
      stage.instructions.push({ keyword: keyword.toUpperCase(), args: args.trim() })
    }
  }
  if (pending !== '') throw new Error('the Dockerfile ends inside a line continuation')
  return stages
}

/** The stage's instructions with this keyword, in order. */
export const instructions = (stage: Stage, keyword: string): Instruction[] =>
  stage.instructions.filter((i) => i.keyword === keyword)

/** Leading `--name=value` flags (`COPY --from=build`, `HEALTHCHECK --interval=5s`), and what follows. */
export function splitFlags(args: string): { flags: Record<string, string>; rest: string } {
  const flags: Record<string, string> = {}
  const flag = /^--([\w-]+)(?:=(\S*))?\s*/
  let rest = args.trim()
  for (let m = flag.exec(rest); m; m = flag.exec(rest)) {
    flags[m[1]!] = m[2] ?? ''
    rest = rest.slice(m[0].length)
  }
  return { flags, rest }
}

/** The `key=value` pairs of LABEL or ENV, quotes removed. */
export function pairs(args: string): Record<string, string> {
  const out: Record<string, string> = {}
  for (const m of args.matchAll(/([\w.-]+)=("(?:[^"\\]|\\.)*"|\S*)/g)) {
    out[m[1]!] = m[2]!.replace(/^"(.*)"$/s, '$1')
  }
  return out
}

/** The working directory at the end of a stage, following `FROM <earlier stage>`. */
export function workdir(stages: readonly Stage[], stage: Stage): string {
  const own = instructions(stage, 'WORKDIR').at(-1)?.args
  if (own !== undefined) return own
  const parent = stages.find((s) => s.name === stage.image)
  return parent ? workdir(stages, parent) : '/'
}

/** The patterns of a .dockerignore file. */
export const dockerignorePatterns = (text: string): string[] =>
  text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'))

/** Whether Docker would leave `path` (relative to the context) out: the last matching rule wins. */
export function dockerignored(patterns: readonly string[], path: string): boolean {
  const parts = path.split('/')
  let ignored = false
  for (const rule of patterns) {
    const negate = rule.startsWith('!')
    const pattern = (negate ? rule.slice(1) : rule).replace(/^\/+|\/+$/g, '')
    if (parts.some((_, n) => matchesGlob(parts.slice(0, n + 1).join('/'), pattern))) ignored = !negate
  }
  return ignored
}
