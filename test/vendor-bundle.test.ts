/**
 * The start-up vendor bundle (decision 0047): scripts/vendor-bundle.js builds typebox and kysely
 * into a few files at `npm install`; bin/vendor-hooks.js points a process's imports of them at it,
 * only when it was built from the installed versions. Each process below is real: a child Node
 * with the hook, resolving and running the packages.
 */
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { fileURLToPath, pathToFileURL } from 'node:url'
import {
  installedVersion,
  readVendorManifest,
  useVendorBundle,
  VENDOR_FORMAT,
  vendorDir,
} from '../bin/vendor-hooks.js'
import { buildVendorBundle, entriesOf, VENDORED } from '../scripts/vendor-bundle.js'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const HOOKS = pathToFileURL(join(ROOT, 'bin', 'vendor-hooks.js')).href

/**
 * Runs `body` (an ES module) in a child Node in the repository, with the bundle in `dir` hooked
 * first (its check printed as `CHECK <json>`), and returns what the child printed as JSON.
 */
function runChild(dir: string, body: string, env: Record<string, string> = {}): Record<string, unknown> {
  const script = `
    import { useVendorBundle } from ${JSON.stringify(HOOKS)}
    const hooked = useVendorBundle(${JSON.stringify(ROOT)}, { dir: ${JSON.stringify(dir)} })
    const out = { skipped: hooked.skipped ?? null }
    ${body}
    console.log(JSON.stringify(out))
  `
  const child = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
    cwd: ROOT,
    encoding: 'utf8',
    env: { ...process.env, PLINTH_VENDOR_BUNDLE: '', ...env },
  })
  assert.equal(child.status, 0, child.stderr)
  return JSON.parse(child.stdout.trim().split('\n').at(-1)!) as Record<string, unknown>
}

/** What a child reports about the packages: where they resolved, and that they work. */
const PROBE = `
  out.kysely = import.meta.resolve('kysely')
  out.typebox = import.meta.resolve('typebox')
  out.migration = import.meta.resolve('kysely/migration')
  const { Kysely, PostgresDialect, sql } = await import('kysely')
  const db = new Kysely({ dialect: new PostgresDialect({ pool: {} }) })
  out.query = db.selectFrom('audit_log').select(['id', sql\`now()\`.as('at')]).where('id', '>', 5).compile().sql
  const { Type } = await import('typebox')
  const { Compile } = await import('typebox/compile')
  const check = Compile(Type.Object({ name: Type.String({ minLength: 2 }) }))
  out.valid = [check.Check({ name: 'ok' }), check.Check({ name: 'x' }), check.Check({})]
  // One copy of each module: the same export through two entries is the same object.
  out.sameGuard = (await import('typebox')).Type.Object === (await import('typebox/type')).Object
  const otel = await import('@opentelemetry/api')
  out.otel = import.meta.resolve('@opentelemetry/api')
  out.span = otel.trace.getTracer('t').startSpan('s').spanContext().traceId
  // require() loads the packages themselves, as without the bundle.
  const { createRequire } = await import('node:module')
  const require = createRequire(import.meta.url)
  out.required = [require.resolve('@opentelemetry/api'), require.resolve('kysely')]
  out.requiredWorks = typeof require('@opentelemetry/api').trace.getTracer === 'function'
`

describe('the vendor bundle', () => {
  let work: string
  let bundle: string

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'plinth-vendor-'))
    bundle = join(work, 'vendor')
    await buildVendorBundle({ outDir: bundle })
  })
  after(() => rmSync(work, { recursive: true, force: true }))

  test('is built from the installed versions, one file per exported entry, no staging left behind', () => {
    const manifest = JSON.parse(readFileSync(join(bundle, 'manifest.json'), 'utf8'))
    assert.equal(manifest.format, VENDOR_FORMAT)
    assert.deepEqual(Object.keys(manifest.packages), [...VENDORED])
    for (const name of VENDORED) assert.equal(manifest.packages[name], installedVersion(ROOT, name))
    const specifiers = VENDORED.flatMap((name) => entriesOf(ROOT, name))
    assert.deepEqual(Object.keys(manifest.entries).sort(), [...specifiers].sort())
    for (const needed of [
      'typebox',
      'typebox/compile',
      'typebox/format',
      'typebox/value',
      'kysely',
      'kysely/migration',
    ])
      assert.ok(specifiers.includes(needed), needed)
    for (const file of Object.values(manifest.entries) as string[])
      assert.ok(existsSync(join(bundle, file)), file)
    assert.ok(!existsSync(`${bundle}.building-${process.pid}`))
  })

  test('rebuilt over an existing bundle: swapped in whole, nothing left beside it', async () => {
    const again = join(work, 'again')
    await buildVendorBundle({ outDir: again })
    const first = readFileSync(join(again, 'manifest.json'), 'utf8')
    writeFileSync(join(again, 'stale-file.mjs'), '// from an older build\n')
    await buildVendorBundle({ outDir: again })
    assert.equal(readFileSync(join(again, 'manifest.json'), 'utf8'), first)
    assert.equal(existsSync(join(again, 'stale-file.mjs')), false, 'the old bundle was not replaced whole')
    assert.deepEqual(
      readdirSync(work).filter((name) => name.startsWith('again')),
      ['again'],
      'a staging or previous directory was left behind',
    )
  })

  test('a hooked process loads the packages from the bundle, and they behave as the packages do', () => {
    const hooked = runChild(bundle, PROBE)
    const plain = runChild(join(work, 'none'), PROBE)
    assert.equal(hooked.skipped, null)
    assert.equal(hooked.kysely, pathToFileURL(join(bundle, 'kysely.mjs')).href)
    assert.equal(hooked.typebox, pathToFileURL(join(bundle, 'typebox.mjs')).href)
    assert.equal(hooked.migration, pathToFileURL(join(bundle, 'kysely__migration.mjs')).href)
    assert.equal(hooked.otel, pathToFileURL(join(bundle, 'opentelemetry__api.mjs')).href)
    assert.deepEqual(hooked.required, plain.required)
    assert.match(String((hooked.required as string[])[0]), /\/node_modules\/@opentelemetry\/api\/.+\.cjs$/)
    assert.equal(plain.skipped, 'no bundle')
    assert.match(String(plain.kysely), /\/node_modules\/kysely\//)
    for (const key of ['query', 'valid', 'sameGuard', 'span', 'requiredWorks'])
      assert.deepEqual(hooked[key], plain[key], key)
    assert.equal(hooked.span, '00000000000000000000000000000000')
    assert.deepEqual(hooked.valid, [true, false, false])
    assert.equal(hooked.sameGuard, true)
  })

  test('an importer with its own nested copy of a bundled package keeps that copy', () => {
    // A package of its own under a directory with its own node_modules/kysely (another version).
    const app = join(work, 'nested')
    const own = join(app, 'node_modules', 'kysely')
    mkdirSync(own, { recursive: true })
    writeFileSync(
      join(own, 'package.json'),
      JSON.stringify({ name: 'kysely', version: '0.0.1-nested', type: 'module', exports: './index.js' }),
    )
    writeFileSync(join(own, 'index.js'), "export const nested = 'the nested copy'\n")
    writeFileSync(join(app, 'importer.mjs'), "export * as kysely from 'kysely'\n")
    const importer = pathToFileURL(join(app, 'importer.mjs')).href
    const out = runChild(
      bundle,
      `const { kysely } = await import(${JSON.stringify(importer)})
      out.nested = kysely.nested ?? null
      out.nestedHasSql = typeof kysely.sql
      out.root = import.meta.resolve('kysely')`,
    )
    assert.equal(out.skipped, null)
    assert.equal(out.nested, 'the nested copy')
    assert.equal(out.nestedHasSql, 'undefined')
    assert.equal(out.root, pathToFileURL(join(bundle, 'kysely.mjs')).href)
  })

  test('a bundle of other versions, of another format, or switched off is not used', () => {
    const manifest = JSON.parse(readFileSync(join(bundle, 'manifest.json'), 'utf8'))
    const stale = join(work, 'stale')
    const odd = join(work, 'odd')
    for (const [dir, content] of [
      [stale, { ...manifest, packages: { ...manifest.packages, kysely: '0.0.1' } }],
      [odd, { ...manifest, format: VENDOR_FORMAT + 1 }],
    ] as const) {
      rmSync(dir, { recursive: true, force: true })
      spawnSync('cp', ['-r', bundle, dir])
      writeFileSync(join(dir, 'manifest.json'), JSON.stringify(content))
    }
    assert.deepEqual(readVendorManifest(ROOT, stale), { skipped: 'kysely is not the bundled version 0.0.1' })
    assert.deepEqual(readVendorManifest(ROOT, odd), { skipped: 'unknown manifest format' })
    const staleChild = runChild(stale, PROBE)
    assert.equal(staleChild.skipped, 'kysely is not the bundled version 0.0.1')
    assert.match(String(staleChild.kysely), /\/node_modules\/kysely\//)
    const off = runChild(bundle, PROBE, { PLINTH_VENDOR_BUNDLE: 'off' })
    assert.equal(off.skipped, 'PLINTH_VENDOR_BUNDLE=off')
    assert.match(String(off.typebox), /\/node_modules\/typebox\//)
    // The check itself registers nothing: this process is unchanged by a refusal.
    assert.deepEqual(useVendorBundle(ROOT, { dir: odd }), { skipped: 'unknown manifest format' })
    assert.equal(vendorDir('/x'), join('/x', 'node_modules', '.cache', 'plinth', 'vendor'))
  })

  test('`npm install` builds it, and a build that cannot run never fails the install', () => {
    const script = join(ROOT, 'scripts', 'vendor-bundle.js')
    const out = join(work, 'cli')
    const built = spawnSync(process.execPath, [script, '--out', out], { cwd: ROOT, encoding: 'utf8' })
    assert.equal(built.status, 0, built.stderr)
    assert.match(
      built.stdout,
      /^vendor bundle: typebox@[\d.]+, kysely@[\d.]+, @opentelemetry\/api@[\d.]+ in \d+ ms$/m,
    )
    assert.ok(readVendorManifest(ROOT, out).entries)
    // A file where the directory's parent should be: the build fails, the install goes on.
    const blocked = join(work, 'a-file')
    writeFileSync(blocked, '')
    const failed = spawnSync(process.execPath, [script, '--out', join(blocked, 'vendor')], {
      cwd: ROOT,
      encoding: 'utf8',
    })
    assert.equal(failed.status, 0)
    assert.match(failed.stderr, /^vendor bundle: not built \(.+\); Plinth starts without it$/m)
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'))
    assert.equal(pkg.scripts.prepare, 'node scripts/vendor-bundle.js')
    assert.match(pkg.scripts.test, /^node --test --import \.\/bin\/vendor-register\.js /)
  })

  test("a production install (no esbuild), on Node 24 or on the machine's older Node, goes on without it", () => {
    // The two files `prepare` runs, in a package of their own with no node_modules: as after
    // `npm ci --omit=dev`, where esbuild (a devDependency) is absent.
    const prod = join(work, 'prod')
    mkdirSync(join(prod, 'scripts'), { recursive: true })
    mkdirSync(join(prod, 'bin'), { recursive: true })
    writeFileSync(join(prod, 'package.json'), JSON.stringify({ name: 'plinth', type: 'module' }))
    cpSync(join(ROOT, 'scripts', 'vendor-bundle.js'), join(prod, 'scripts', 'vendor-bundle.js'))
    cpSync(join(ROOT, 'bin', 'vendor-hooks.js'), join(prod, 'bin', 'vendor-hooks.js'))
    const nodes = [process.execPath]
    const old = spawnSync('/usr/bin/node', ['--version'], { encoding: 'utf8' }).stdout?.trim()
    if (old && Number(old.slice(1).split('.')[0]) < 24) nodes.push('/usr/bin/node')
    for (const node of nodes) {
      const run = spawnSync(node, ['scripts/vendor-bundle.js'], { cwd: prod, encoding: 'utf8' })
      assert.equal(run.status, 0, `${node}: ${run.stderr}`)
      assert.match(
        run.stdout,
        /^vendor bundle: esbuild is not installed .*Plinth starts without the bundle$/m,
      )
      assert.ok(!existsSync(vendorDir(prod)))
    }
    // With esbuild, the machine's older Node builds it as well (npm runs `prepare` with it).
    if (nodes.length > 1) {
      const script = join(ROOT, 'scripts', 'vendor-bundle.js')
      const out = join(work, 'old-node')
      const built = spawnSync(nodes[1]!, [script, '--out', out], { cwd: ROOT, encoding: 'utf8' })
      assert.equal(built.status, 0, built.stderr)
      assert.ok(readVendorManifest(ROOT, out).entries)
    }
  })

  test('refuses a package that imports another package, and one that is not installed', async () => {
    // pg-boss imports pg: from the bundle's directory that import could find another copy.
    await assert.rejects(
      buildVendorBundle({ outDir: join(work, 'deps'), packages: ['pg-boss'] }),
      (err: Error) => {
        assert.match(err.message, /imports pg, which is not bundled/)
        return true
      },
    )
    assert.ok(!existsSync(join(work, 'deps')))
    assert.ok(!existsSync(`${join(work, 'deps')}.building-${process.pid}`))
    await assert.rejects(
      buildVendorBundle({ outDir: join(work, 'missing'), packages: ['no-such-package-here'] }),
      {
        message: 'no-such-package-here is not installed',
      },
    )
  })
})
