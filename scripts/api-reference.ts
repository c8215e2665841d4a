/**
 * Renders docs/reference/api.md, the reference of Plinth's public API, from the sources: every
 * name `src/index.ts` (`plinth`) and `src/testing/index.ts` (`plinth/testing`) export, with its doc
 * comment and its declaration (interfaces and types whole, functions to their signature), found
 * by following the re-exports to the file that declares it. `npm run docs:generate` writes it;
 * test/api-reference.test.ts fails when it is stale or leaves an export out.
 *
 * A small reader of our own sources rather than TypeDoc: TypeScript 7 (what this repository
 * builds with) has no JavaScript compiler API for such tools yet. It relies on the house style:
 * declarations start a line with `export`, and doc comments sit right above them.
 */
import { readFileSync } from 'node:fs'
import { dirname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('../', import.meta.url))

export interface ApiEntry {
  readonly name: string
  readonly kind: string
  /** Path of the declaring file, relative to the repository. */
  readonly source: string
  readonly doc: string
  readonly declaration: string
}

export interface ApiSection {
  readonly title: string
  readonly entries: readonly ApiEntry[]
  /** Names re-exported from another package, with the package. */
  readonly external: readonly {
    readonly names: readonly string[]
    readonly from: string
    readonly doc: string
  }[]
}

const read = (path: string) => readFileSync(path, 'utf8')

/** The doc comment that ends right before `index` (biome-ignore lines between are skipped). */
function docBefore(text: string, index: number): string {
  let end = index
  const before = text.slice(0, end).replace(/(\n[ \t]*\/\/[^\n]*)+\s*$/, '')
  end = before.trimEnd().length
  if (!before.trimEnd().endsWith('*/')) return ''
  const start = before.lastIndexOf('/**', end)
  if (start < 0) return ''
  return before
    .slice(start + 3, end - 2)
    .split('\n')
    .map((l) => l.replace(/^\s*\* ?/, ''))
    .join('\n')
    .trim()
}

/** From `start`, the text up to where brackets balance again and the statement ends. */
function statementFrom(text: string, start: number, kind: string): string {
  let depth = 0
  let paramsClosed = kind !== 'function'
  let sawParen = false
  let lastSignificant = ''
  for (let i = start; i < text.length; i++) {
    const c = text[i]!
    if (c === '=' && text[i + 1] === '>') {
      i++
      lastSignificant = '>'
      continue
    }
    if (kind === 'function') {
      if (c === '(') {
        depth++
        sawParen = true
      } else if (c === ')') {
        depth--
        if (depth === 0 && sawParen) paramsClosed = true
      } else if (c === '<') depth++
      else if (c === '>') depth--
      else if (c === '{') {
        if (depth === 0 && paramsClosed && lastSignificant !== ':' && lastSignificant !== '|')
          return text.slice(start, i).trimEnd()
        depth++
      } else if (c === '}') depth--
    } else {
      if (c === '{' || c === '(' || c === '[') depth++
      else if (c === '}' || c === ')' || c === ']') {
        depth--
        if (depth === 0 && (kind === 'interface' || kind === 'class')) return text.slice(start, i + 1)
      } else if (c === '\n' && depth === 0) {
        const next = text.slice(i + 1).match(/^[ \t]*(\S)/)?.[1]
        if (
          kind !== 'interface' &&
          kind !== 'class' &&
          next !== '|' &&
          next !== '&' &&
          !/^[ \t]/.test(text[i + 1] ?? '')
        )
          return text.slice(start, i).trimEnd()
      }
    }
    if (!/\s/.test(c)) lastSignificant = c
  }
  return text.slice(start).trimEnd()
}

/** A class as its header and public fields (method bodies are not the reference). */
function classOutline(declaration: string): string {
  const lines = declaration.split('\n')
  const fields = lines.filter((l) => /^ {2}(readonly |static )/.test(l))
  return `${lines[0]}\n${fields.join('\n')}\n  // …\n}`
}

/** Finds `name`'s declaration in `file`, following imports and re-exports. */
function declarationOf(file: string, name: string, seen = new Set<string>()): ApiEntry | undefined {
  const key = `${file}#${name}`
  if (seen.has(key)) return undefined
  seen.add(key)
  const text = read(file)
  const decl = new RegExp(
    `^export (?:declare )?(?:async )?(function|interface|type|const|class|enum) ${name}\\b`,
    'm',
  ).exec(text)
  if (decl) {
    const kind = decl[1]!
    let declaration = statementFrom(text, decl.index, kind)
    if (kind === 'class') declaration = classOutline(declaration)
    return { name, kind, source: relative(root, file), doc: docBefore(text, decl.index), declaration }
  }
  const via = new RegExp(
    `(?:import|export)\\s+(?:type\\s+)?\\{[^}]*\\b(?:type\\s+)?${name}\\b[^}]*\\}\\s*from\\s*'(\\.[^']+)'`,
  ).exec(text)
  if (via) return declarationOf(join(dirname(file), via[1]!), name, seen)
  return undefined
}

/** Sections of the reference, by the file (or package) a name comes from; the first match wins. */
const SECTIONS: readonly { title: string; from: RegExp }[] = [
  { title: 'Writing a module', from: /^src\/core\/(define-module|module)\.ts$/ },
  {
    title: 'Routes: schemas, permissions, errors',
    from: /^(typebox|src\/http\/|src\/core\/permissions|src\/shared\/)/,
  },
  { title: 'Audit, events, jobs, schedules', from: /^src\/core\/(audit|events|jobs|security-events)\.ts$/ },
  { title: 'Personal data, retention', from: /^src\/core\/(privacy|retention)\.ts$/ },
  { title: 'Health, metrics, people', from: /^src\/(observability\/|core\/identity)/ },
  { title: 'Running an application', from: /./ },
]

const sectionOf = (source: string) => SECTIONS.find((s) => s.from.test(source))!.title

/** The public names of an entry file, by section (`SECTIONS`), each section in source order. */
export function apiOf(entry: string): ApiSection[] {
  const file = join(root, entry)
  const text = read(file)
  const out = new Map<string, { entries: ApiEntry[]; external: ApiSection['external'][number][] }>()
  const bucket = (source: string) => {
    const title = sectionOf(source)
    let b = out.get(title)
    if (!b) {
      b = { entries: [], external: [] }
      out.set(title, b)
    }
    return b
  }
  for (const m of text.matchAll(/^export\s+(?:type\s+)?\{([^}]*)\}\s*from\s*'([^']+)'/gm)) {
    const names = m[1]!
      .split(',')
      .map((n) => n.trim().replace(/^type\s+/, ''))
      .filter(Boolean)
    const from = m[2]!
    if (!from.startsWith('.')) {
      bucket(from).external.push({ names, from, doc: docBefore(text, m.index) })
      continue
    }
    for (const name of names) {
      const found = declarationOf(join(dirname(file), from), name)
      if (!found) throw new Error(`${entry}: cannot find the declaration of ${name} (from ${from})`)
      bucket(found.source).entries.push(found)
    }
  }
  for (const m of text.matchAll(
    /^export (?:declare )?(?:async )?(function|interface|type|const|class) (\w+)/gm,
  )) {
    const found = declarationOf(file, m[2]!)
    if (found) bucket(found.source).entries.push(found)
  }
  return SECTIONS.filter((s) => out.has(s.title)).map((s) => ({
    title: s.title,
    entries: out.get(s.title)!.entries,
    external: out.get(s.title)!.external,
  }))
}

const ENTRIES = [
  {
    specifier: 'plinth',
    file: 'src/index.ts',
    intro: 'Writing modules and running an application.',
  },
  {
    specifier: 'plinth/testing',
    file: 'src/testing/index.ts',
    intro: 'Testing modules on a real Plinth.',
  },
] as const

/** Every name documented, per entry (what the drift test compares with the runtime exports). */
export function documentedNames(): Record<string, string[]> {
  return Object.fromEntries(
    ENTRIES.map((e) => [
      e.specifier,
      apiOf(e.file).flatMap((s) => [...s.entries.map((x) => x.name), ...s.external.flatMap((x) => x.names)]),
    ]),
  )
}

/** A doc comment as Markdown: `@example` blocks fenced, `@typeParam`/`@param` as list items. */
function markdownOf(doc: string): string {
  const out: string[] = []
  let example: string[] | undefined
  const flush = () => {
    if (example) out.push('', 'Example:', '', '```ts', ...example, '```')
    example = undefined
  }
  for (const line of doc.split('\n')) {
    if (line.startsWith('@example')) {
      flush()
      example = line.slice('@example'.length).trim() ? [line.slice('@example'.length).trim()] : []
      continue
    }
    if (line.startsWith('@')) {
      flush()
      const tag = /^@(\w+)\s+(\S+)\s*-?\s*(.*)$/.exec(line)
      out.push(tag ? `- ${tag[1]} \`${tag[2]}\`: ${tag[3]}` : line)
      continue
    }
    if (example) example.push(line)
    else out.push(line)
  }
  flush()
  return out.join('\n').trim()
}

export function renderApiReference(): string {
  const parts: string[] = [
    '# Public API reference',
    '',
    '<!-- Generated by `npm run docs:generate` from src/index.ts and src/testing/index.ts (scripts/api-reference.ts): do not edit. -->',
    '',
    'What an application imports from Plinth. The guide is [Build a module](../guides/build-a-module.md); everything not listed here is internal and may change.',
    '',
  ]
  for (const e of ENTRIES) parts.push(`- [\`${e.specifier}\`](#${e.specifier.replace('/', '')}): ${e.intro}`)
  parts.push('')
  for (const e of ENTRIES) {
    parts.push(`## \`${e.specifier}\``, '', `Source: \`${e.file}\`.`, '')
    for (const section of apiOf(e.file)) {
      if (apiOf(e.file).length > 1) parts.push(`### ${section.title}`, '')
      for (const x of section.external) {
        parts.push(
          `- Re-exported from \`${x.from}\`: ${x.names.map((n) => `\`${n}\``).join(', ')}.${x.doc ? ` ${x.doc.replace(/\s*\n\s*/g, ' ')}` : ''}`,
          '',
        )
      }
      for (const entry of section.entries) {
        parts.push(`#### \`${entry.name}\``, '', `*${entry.kind}* — \`${entry.source}\``, '')
        if (entry.doc) parts.push(markdownOf(entry.doc), '')
        parts.push('```ts', entry.declaration, '```', '')
      }
    }
  }
  return `${parts.join('\n').trimEnd()}\n`
}
