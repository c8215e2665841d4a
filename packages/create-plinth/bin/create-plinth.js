#!/usr/bin/env node
// @ts-check
/**
 * `npm create plinth my-app` (or, in the Plinth repository, `npm exec create-plinth -- my-app`):
 * writes an application on Plinth into a new directory — plinth.config.ts, main.ts, one example
 * module with a migration, routes and a job, its test, .env.example and a README.
 * Plain JavaScript: it runs from npm's cache (under node_modules, where Node strips no types) on
 * any Node.js npm runs on.
 */
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  realpathSync,
  statSync,
  writeFileSync,
} from 'node:fs'
import { basename, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'

const USAGE = `Usage: npm create plinth <directory> [-- --plinth <version|file:…>]

Creates an application on Plinth in <directory> (which must not exist, or be empty).
  --plinth SPEC   the dependency on plinth written in package.json (default: ^<this version>);
                  e.g. file:../plinth-0.1.0.tgz for a packed Plinth
  --name NAME     the package name (default: the directory's name)
  -h, --help      this help`

/** Template files whose name npm would not pack as is, and what they become. */
const RENAMES = {
  _gitignore: '.gitignore',
  '_env.example': '.env.example',
  'package.json.tmpl': 'package.json',
}

/** @param {string} dir @returns {string[]} every file under dir, relative to it */
function filesUnder(dir) {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name)
    return statSync(path).isDirectory() ? filesUnder(path).map((f) => join(name, f)) : [name]
  })
}

/**
 * Writes the application; returns the files written (relative to the target).
 * @param {{ target: string, name: string, plinth: string }} options
 */
export function scaffold({ target, name, plinth }) {
  if (existsSync(target) && readdirSync(target).length > 0)
    throw new Error(`${target} exists and is not empty: choose a new directory`)
  const templateDir = fileURLToPath(new URL('../template/', import.meta.url))
  const written = []
  for (const file of filesUnder(templateDir)) {
    const base = basename(file)
    const out = join(
      file.slice(0, file.length - base.length),
      RENAMES[/** @type {keyof typeof RENAMES} */ (base)] ?? base,
    )
    const text = readFileSync(join(templateDir, file), 'utf8')
      .replaceAll('__APP_NAME__', name)
      .replaceAll('__PLINTH_SPEC__', plinth)
    mkdirSync(join(target, out, '..'), { recursive: true })
    writeFileSync(join(target, out), text)
    written.push(out)
  }
  return written.sort()
}

function main() {
  let parsed
  try {
    parsed = parseArgs({
      allowPositionals: true,
      options: {
        plinth: { type: 'string' },
        name: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    })
  } catch (err) {
    process.stderr.write(`create-plinth: ${/** @type {Error} */ (err).message}\n\n${USAGE}\n`)
    return 2
  }
  if (parsed.values.help) {
    process.stdout.write(`${USAGE}\n`)
    return 0
  }
  const [dir, ...extra] = parsed.positionals
  if (!dir || extra.length > 0) {
    process.stderr.write(`create-plinth: name one directory\n\n${USAGE}\n`)
    return 2
  }
  const own = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'))
  const target = resolve(dir)
  const name =
    parsed.values.name ??
    basename(target)
      .toLowerCase()
      .replace(/[^a-z0-9._-]+/g, '-')
  const plinth = parsed.values.plinth ?? `^${own.version}`
  try {
    const files = scaffold({ target, name, plinth })
    const where = relative(process.cwd(), target) || '.'
    process.stdout.write(
      `Created ${name} in ${where}:\n${files.map((f) => `  ${f}`).join('\n')}\n\nNext (Node.js 24 or newer):\n  cd ${where}\n  npm install && npm start\n  npm test\n`,
    )
    return 0
  } catch (err) {
    process.stderr.write(`create-plinth: ${/** @type {Error} */ (err).message}\n`)
    return 1
  }
}

// Run as a command (npm links bin/ through a symlink), not when imported by a test.
if (process.argv[1] && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url))
  process.exitCode = main()
