import assert from 'node:assert/strict'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'

// Expand/contract: during a rolling deploy, replicas of release N-1 run against release N's schema
// (docs/operations/deploys-and-shutdown.md). So a migration's `up` may only add — tables, nullable
// columns or columns with a default, indexes, constraints the old code already satisfies. What
// removes or changes something the previous release reads or writes (drop, rename, type change,
// NOT NULL on an existing column, a NOT NULL column without a default) is a *contract* step: it
// ships a release after the code stopped using the thing, and says so on the line before it with
// `// contract: <why the previous release no longer needs it>`. This lint enforces that.

const ROOT = fileURLToPath(new URL('..', import.meta.url))

/** Destructive operations, in Kysely's schema builder or in raw SQL. */
const DESTRUCTIVE: readonly [RegExp, string][] = [
  [/\.drop(Table|Column|Schema|View|Type)\(/, 'drops'],
  [/\.rename(Column|To)\(/, 'renames'],
  [/\.setDataType\(/, 'changes a column type'],
  [/\.setNotNull\(/, 'makes an existing column NOT NULL'],
  [/\bdrop\s+(table|column|schema|view|type|materialized\s+view)\b/i, 'drops'],
  [/\brename\s+(to|column)\b/i, 'renames'],
  [/\balter\s+column\s+\S+\s+(set\s+data\s+)?type\b/i, 'changes a column type'],
  [/\bset\s+not\s+null\b/i, 'makes an existing column NOT NULL'],
  [/(?<!\b(before|after|instead of)\s+)\btruncate\b/i, 'empties a table'],
]

export interface Finding {
  readonly line: number
  readonly text: string
  readonly why: string
}

/** The body of `async up(…) { … }` with its first line number (1-based). */
function upBody(source: string): { body: string; firstLine: number } {
  const start = source.search(/async\s+up\s*\(/)
  assert.ok(start >= 0, 'no async up(...)')
  const open = source.indexOf('{', source.indexOf(')', start))
  let depth = 0
  for (let i = open; i < source.length; i++) {
    if (source[i] === '{') depth++
    else if (source[i] === '}' && --depth === 0)
      return { body: source.slice(open, i + 1), firstLine: source.slice(0, open).split('\n').length }
  }
  throw new Error('unbalanced braces in up()')
}

/** What in a migration's `up` is not additive and not marked as a contract step. */
export function nonAdditive(source: string): Finding[] {
  const { body, firstLine } = upBody(source)
  const lines = body.split('\n')
  const findings: Finding[] = []
  const marked = (i: number) =>
    /\/\/\s*contract:\s*\S/.test(lines[i - 1] ?? '') || /\/\/\s*contract:\s*\S/.test(lines[i]!)
  lines.forEach((text, i) => {
    if (/^\s*(\/\/|\*)/.test(text) || marked(i)) return
    for (const [pattern, why] of DESTRUCTIVE)
      if (pattern.test(text)) findings.push({ line: firstLine + i, text: text.trim(), why })
  })
  // A NOT NULL column added to an existing table without a default: the previous release's
  // inserts, which do not know the column, would fail.
  for (const m of body.matchAll(/\.alterTable\([\s\S]*?\.execute\(\)/g)) {
    for (const add of m[0].matchAll(/\.addColumn\(([^()]|\([^()]*\)|\((?:[^()]|\([^()]*\))*\))*\)/g)) {
      if (/notNull\(\)/.test(add[0]) && !/defaultTo\(/.test(add[0])) {
        const line = firstLine + body.slice(0, (m.index ?? 0) + (add.index ?? 0)).split('\n').length - 1
        if (!marked(line - firstLine))
          findings.push({
            line,
            text: add[0].split('\n')[0]!.trim(),
            why: 'adds a NOT NULL column without a default',
          })
      }
    }
  }
  for (const m of body.matchAll(/add\s+column\s+[^,;`]*?not\s+null(?![^,;`]*default)[^,;`]*/gi)) {
    const line = firstLine + body.slice(0, m.index).split('\n').length - 1
    if (!marked(line - firstLine))
      findings.push({ line, text: m[0].trim(), why: 'adds a NOT NULL column without a default' })
  }
  return findings
}

function migrationFiles(): string[] {
  const modules = join(ROOT, 'src/modules')
  return readdirSync(modules).flatMap((m) => {
    try {
      return readdirSync(join(modules, m, 'migrations'))
        .filter((f) => /^\d{4}-.*\.ts$/.test(f) && !f.endsWith('.test.ts'))
        .map((f) => `src/modules/${m}/migrations/${f}`)
    } catch {
      return []
    }
  })
}

describe('migrations are additive (expand/contract)', () => {
  const files = migrationFiles()

  it('finds the migrations', () => {
    assert.ok(files.length >= 8, files.join(', '))
  })

  for (const file of files) {
    it(`${file}: up() only expands, or marks its contract steps`, () => {
      const findings = nonAdditive(readFileSync(join(ROOT, file), 'utf8'))
      assert.deepEqual(
        findings.map((f) => `${file}:${f.line} ${f.why}: ${f.text}`),
        [],
        'release N-1 runs on this schema during a rolling deploy: make it additive, or mark a contract step',
      )
    })
  }

  it('catches what would break the previous release, and accepts what would not', () => {
    const up = (body: string) =>
      `export default {\n  async up(db) {\n${body}\n  },\n  async down(db) {\n    await db.schema.dropTable('t').execute()\n  },\n}\n`
    const whys = (body: string) => nonAdditive(up(body)).map((f) => f.why)
    assert.deepEqual(
      whys(`    await db.schema.createTable('t').addColumn('a', 'text', (c) => c.notNull()).execute()`),
      [],
    )
    assert.deepEqual(whys(`    await db.schema.alterTable('t').addColumn('b', 'text').execute()`), [])
    assert.deepEqual(
      whys(
        `    await db.schema.alterTable('t').addColumn('b', 'text', (c) => c.notNull().defaultTo('x')).execute()`,
      ),
      [],
    )
    assert.deepEqual(
      whys(`    await db.schema.alterTable('t').addColumn('b', 'text', (c) => c.notNull()).execute()`),
      ['adds a NOT NULL column without a default'],
    )
    assert.deepEqual(whys(`    await sql\`alter table t add column b text not null\`.execute(db)`), [
      'adds a NOT NULL column without a default',
    ])
    assert.deepEqual(
      whys(`    await sql\`alter table t add column b text not null default ''\`.execute(db)`),
      [],
    )
    assert.deepEqual(whys(`    await db.schema.alterTable('t').dropColumn('a').execute()`), ['drops'])
    assert.deepEqual(whys(`    await db.schema.alterTable('t').renameColumn('a', 'b').execute()`), [
      'renames',
    ])
    assert.deepEqual(whys(`    await sql\`alter table t alter column a type bigint\`.execute(db)`), [
      'changes a column type',
    ])
    assert.deepEqual(whys('    await sql`truncate table t`.execute(db)'), ['empties a table'])
    assert.deepEqual(
      whys('    await sql`create trigger t_keep before truncate on t for each statement`.execute(db)'),
      [],
    )
    assert.deepEqual(whys(`    await sql\`alter table t alter column a set not null\`.execute(db)`), [
      'makes an existing column NOT NULL',
    ])
    assert.deepEqual(
      whys(
        `    // contract: release 0.3 stopped reading t.a\n    await db.schema.alterTable('t').dropColumn('a').execute()`,
      ),
      [],
    )
  })
})
